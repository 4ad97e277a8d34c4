//! The upstream side of an exchange as one byte-stream type: a TCP
//! connection to a direct upstream, a proxy stream to an agent on this
//! worker, or a socket to the worker that holds the agent's session (the
//! cross-core relay). The pipeline reads, writes, pools and pipes all
//! three the same way.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::{TcpStream, UnixStream};
use monoio::BufResult;

use super::error_page::EdgeError;
use crate::tunnel::proxy_stream::TunnelStream;
use crate::tunnel::worker_tunnels::RelayState;

pub enum UpStream {
    Tcp(TcpStream),
    Tunnel(TunnelStream),
    /// The socket to the owning worker, and what that worker did with
    /// the request (opened the agent stream or not).
    Relay(UnixStream, Arc<RelayState>),
}

impl std::fmt::Debug for UpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpStream::Tcp(_) => "UpStream::Tcp",
            UpStream::Tunnel(_) => "UpStream::Tunnel",
            UpStream::Relay(..) => "UpStream::Relay",
        })
    }
}

/// What an idle connection is pooled under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PoolKey {
    Addr(SocketAddr),
    /// Streams to one bound tunnel, per client address: the ProxyHeader
    /// names the client, so a stream is only reused for the same one.
    Tunnel {
        tunnel: Arc<str>,
        session: u64,
        client_ip: IpAddr,
    },
}

/// True when a socket has nothing to read and no FIN or error pending:
/// the state of a healthy idle keep-alive connection.
fn socket_still_open(fd: i32) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv on a valid fd into a one-byte stack buffer; MSG_PEEK and
    // MSG_DONTWAIT make it a non-destructive, non-blocking probe.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

impl UpStream {
    /// The error for a new connection that ended (`reset`: with an error)
    /// before any response byte. A stream to the agent that was opened
    /// and then closed unanswered is the upstream's failure (the agent
    /// passes its upstream's EOF on): ERR_NGROK_3004, like a direct
    /// upstream. Only a stream that could not be opened, or that the
    /// agent's session reset, is ERR_NGROK_3210.
    pub fn unanswered(&self, reset: bool) -> EdgeError {
        match self {
            UpStream::Tcp(_) => EdgeError::UPSTREAM_INVALID,
            UpStream::Tunnel(_) if reset => EdgeError::AGENT_UNREACHABLE,
            UpStream::Tunnel(_) => EdgeError::UPSTREAM_INVALID,
            UpStream::Relay(_, state) => state.unanswered(),
        }
    }

    /// Whether an idle pooled connection still looks usable.
    pub fn still_open(&self) -> bool {
        match self {
            UpStream::Tcp(s) => socket_still_open(s.as_raw_fd()),
            UpStream::Relay(s, _) => socket_still_open(s.as_raw_fd()),
            UpStream::Tunnel(s) => !s.is_read_closed(),
        }
    }
}

impl AsyncReadRent for UpStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Tcp(s) => s.read(buf).await,
            UpStream::Tunnel(s) => s.read(buf).await,
            UpStream::Relay(s, _) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Tcp(s) => s.readv(buf).await,
            UpStream::Tunnel(s) => s.readv(buf).await,
            UpStream::Relay(s, _) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Tcp(s) => s.write(buf).await,
            UpStream::Tunnel(s) => s.write(buf).await,
            UpStream::Relay(s, _) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Tcp(s) => s.writev(buf).await,
            UpStream::Tunnel(s) => s.writev(buf).await,
            UpStream::Relay(s, _) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            UpStream::Tcp(s) => s.flush().await,
            UpStream::Tunnel(s) => s.flush().await,
            UpStream::Relay(s, _) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            UpStream::Tcp(s) => s.shutdown().await,
            UpStream::Tunnel(s) => s.shutdown().await,
            UpStream::Relay(s, _) => s.shutdown().await,
        }
    }
}

// SAFETY: every variant is itself safe to split into a read half and a
// write half used concurrently.
unsafe impl monoio::io::Split for UpStream {}
