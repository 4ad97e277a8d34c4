//! The upstream side of an exchange, shared by every client protocol
//! (HTTP/1.1 connections now, HTTP/2 streams next): take a pooled
//! connection or open one, send the request head (retrying once on a fresh
//! connection when that is safe), read the response head, and give the
//! connection back to the worker's pool.

use std::net::SocketAddr;

use monoio::net::TcpStream;
use tracing::debug;

use super::error_page::EdgeError;
use super::io::{read_append, write_all, IoFail};
use super::upstream_stream::{PoolKey, UpStream};
use crate::config::Timeouts;
use crate::http1::ResponseHead;
use crate::route::{Endpoint, TunnelTarget, Upstream};
use crate::runtime::worker::WorkerCtx;

/// Where an endpoint's requests go.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// A direct upstream the edge connects to itself.
    Direct(&'a Upstream),
    /// An agent, through a tunnel.
    Tunnel(&'a TunnelTarget),
}

impl<'a> Target<'a> {
    pub fn of(endpoint: &'a Endpoint) -> Option<Target<'a>> {
        if let Some(t) = &endpoint.tunnel {
            return Some(Target::Tunnel(t));
        }
        endpoint.upstream.as_ref().map(Target::Direct)
    }
}

/// The public client of the exchange, for the agent's ProxyHeader.
#[derive(Clone, Copy)]
pub struct ClientInfo {
    pub addr: SocketAddr,
    /// `http` or `https`: the endpoint's protocol.
    pub proto: &'static str,
}

/// A connection to an upstream, for one exchange.
pub struct UpstreamConn {
    pub stream: UpStream,
    pub key: PoolKey,
    /// For agent streams: the session's slot-pressure flag.
    pub pressure: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// A pooled connection if one is idle, else a new one. A request that
/// cannot be retried only gets a pooled connection that passes a liveness
/// probe. Returns whether the connection was reused.
async fn connect(
    ctx: &WorkerCtx,
    target: Target<'_>,
    client: &ClientInfo,
    retryable: bool,
    t: &Timeouts,
) -> Result<(UpstreamConn, bool), EdgeError> {
    let upstream = match target {
        Target::Direct(u) => u,
        Target::Tunnel(tt) => {
            let binding = ctx.tunnels.pick(tt)?;
            let key = PoolKey::Tunnel {
                tunnel: binding.tunnel_id.clone(),
                session: binding.session,
                client_ip: client.addr.ip(),
            };
            let pooled = if retryable {
                ctx.pool.borrow_mut().take(&key, t.upstream_idle)
            } else {
                ctx.pool.borrow_mut().take_alive(&key, t.upstream_idle)
            };
            let pressure = Some(binding.pressure.clone());
            if let Some(stream) = pooled {
                return Ok((
                    UpstreamConn {
                        stream,
                        key,
                        pressure,
                    },
                    true,
                ));
            }
            // Idle streams hold session slots: give one back rather than
            // make this request wait (a local session that is full, or a
            // remote one whose worker has requests waiting).
            let remote_pressed = binding.worker != ctx.id
                && binding.pressure.load(std::sync::atomic::Ordering::Relaxed);
            if remote_pressed || ctx.tunnels.is_full(binding) {
                ctx.pool.borrow_mut().evict_one_of_session(binding.session);
            }
            let stream = ctx
                .tunnels
                .open(binding, client, t.upstream_connect)
                .await?;
            return Ok((
                UpstreamConn {
                    stream,
                    key,
                    pressure,
                },
                false,
            ));
        }
    };
    for addr in &upstream.addrs {
        let key = PoolKey::Addr(*addr);
        let pooled = if retryable {
            ctx.pool.borrow_mut().take(&key, t.upstream_idle)
        } else {
            ctx.pool.borrow_mut().take_alive(&key, t.upstream_idle)
        };
        if let Some(stream) = pooled {
            return Ok((
                UpstreamConn {
                    stream,
                    key,
                    pressure: None,
                },
                true,
            ));
        }
    }
    let mut last = EdgeError::UPSTREAM_UNREACHABLE;
    for addr in &upstream.addrs {
        match monoio::time::timeout(t.upstream_connect, TcpStream::connect_addr(*addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((
                    UpstreamConn {
                        stream: UpStream::Tcp(stream),
                        key: PoolKey::Addr(*addr),
                        pressure: None,
                    },
                    false,
                ));
            }
            Ok(Err(e)) => {
                debug!(%addr, error = %e, "upstream connect failed");
                last = EdgeError::UPSTREAM_UNREACHABLE;
            }
            Err(_) => last = EdgeError::UPSTREAM_TIMEOUT,
        }
    }
    Err(last)
}

/// Sends `head` (which may already hold the whole body) to the upstream.
///
/// When `complete` (nothing more will be sent), it also waits for the
/// first response bytes, into `ubuf`: a pooled connection the upstream had
/// closed shows up as EOF with nothing read, and is retried once on a fresh
/// connection when `retryable` (idempotent, no body). Nothing else is ever
/// sent twice.
#[allow(clippy::too_many_arguments)]
pub async fn send_head(
    ctx: &WorkerCtx,
    target: Target<'_>,
    client: &ClientInfo,
    head: &mut Vec<u8>,
    complete: bool,
    retryable: bool,
    ubuf: &mut Vec<u8>,
    t: &Timeouts,
) -> Result<UpstreamConn, EdgeError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut up, reused) = connect(ctx, target, client, retryable, t).await?;
        let may_retry = reused && retryable && attempt == 1;
        let (res, buf) = write_all(&mut up.stream, std::mem::take(head), t.upstream_idle).await;
        *head = buf;
        if res.is_err() {
            if may_retry {
                debug!("pooled upstream connection was closed; retrying on a fresh one");
                continue;
            }
            return Err(EdgeError::UPSTREAM_UNREACHABLE);
        }
        if !complete {
            return Ok(up);
        }
        ubuf.clear();
        let (res, buf) = read_append(&mut up.stream, std::mem::take(ubuf), t.upstream_idle).await;
        *ubuf = buf;
        match res {
            Ok(n) if n > 0 => return Ok(up),
            Ok(_) | Err(IoFail::Io(_)) if may_retry => {
                debug!("pooled upstream connection was closed; retrying on a fresh one");
                continue;
            }
            Err(IoFail::TimedOut) => return Err(EdgeError::UPSTREAM_TIMEOUT),
            // A new connection that ends before any byte: a stream the
            // agent ended unanswered (3004) or one that was never opened
            // (3210); see `UpStream::unanswered`.
            Ok(_) if !reused => return Err(up.stream.unanswered(false)),
            Err(IoFail::Io(_)) if !reused => return Err(up.stream.unanswered(true)),
            _ => return Err(EdgeError::UPSTREAM_INVALID),
        }
    }
}

/// Reads until a complete response head is parsed from `ubuf` into `res`.
/// Interim (1xx) heads are returned like any other; the caller relays them
/// and calls again after draining `res.head_len` bytes.
pub async fn read_response_head(
    up: &mut UpstreamConn,
    ubuf: &mut Vec<u8>,
    res: &mut ResponseHead,
    max_head: usize,
    head_request: bool,
    t: &Timeouts,
) -> Result<(), EdgeError> {
    res.reset();
    loop {
        match res.parse(ubuf, max_head, head_request) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(_) => return Err(EdgeError::UPSTREAM_INVALID),
        }
        let (r, buf) = read_append(&mut up.stream, std::mem::take(ubuf), t.upstream_idle).await;
        *ubuf = buf;
        match r {
            Ok(n) if n > 0 => {}
            Err(IoFail::TimedOut) => return Err(EdgeError::UPSTREAM_TIMEOUT),
            // Nothing received (a request whose body was sent after the
            // head): a relayed stream that was never opened is still 3210.
            Ok(_) if ubuf.is_empty() => return Err(up.stream.unanswered(false)),
            Err(IoFail::Io(_)) if ubuf.is_empty() => return Err(up.stream.unanswered(true)),
            _ => return Err(EdgeError::UPSTREAM_INVALID),
        }
    }
}

/// Gives a connection whose exchange completed cleanly back to the pool.
pub fn release(ctx: &WorkerCtx, up: UpstreamConn, max_idle_per_host: usize) {
    if ctx.drain.is_fired() {
        return;
    }
    // A session's idle streams never take more than its stream slots, and
    // are not kept at all while requests wait for a slot. A relayed
    // connection's slot is on the owning worker: it is kept only while
    // that worker has no request waiting (its pressure flag), at most a
    // quarter of the slots per client, and given back on the next relayed
    // request once the flag is up.
    let pressed = up
        .pressure
        .as_ref()
        .is_some_and(|p| p.load(std::sync::atomic::Ordering::Relaxed));
    let max_idle_per_host = match (&up.key, &up.stream) {
        (_, UpStream::Relay(..)) => {
            if pressed {
                return;
            }
            max_idle_per_host.min(crate::tunnel::worker_tunnels::MAX_STREAMS_PER_SESSION / 4)
        }
        (PoolKey::Tunnel { session, .. }, _) => {
            if ctx.tunnels.has_waiters(*session) {
                return;
            }
            max_idle_per_host.min(crate::tunnel::worker_tunnels::MAX_STREAMS_PER_SESSION)
        }
        (PoolKey::Addr(_), _) => max_idle_per_host,
    };
    ctx.pool
        .borrow_mut()
        .put(up.key, up.stream, max_idle_per_host);
}
