//! The wire between a running edge and the successor it spawned for an
//! upgrade: a SOCK_SEQPACKET socket pair (one JSON message per packet,
//! boundaries kept by the kernel), listening sockets passed with
//! SCM_RIGHTS, one per message.
//!
//! Owns: the message set and its encoding, sending and receiving with a
//! deadline. Must never: decide anything about the upgrade (that is
//! `upgrade`), or block a worker (only the control threads use it).
//!
//! The sequence (old = the running edge, new = its successor):
//!
//! ```text
//! new → old  Hello { pid, workers }        config loaded and valid
//! old → new  Listener { kind } + fd        one per socket, every kind
//! old → new  Reservations { items }        agent URLs held by the old process
//! old → new  ListenersDone
//! new → old  Ready                         workers run, accepting on the same sockets
//!            old stops accepting, runs its close hooks (store)
//! old → new  Go { items }                  reservations again (binds since)
//!            new opens its control-plane resources (store, with retry)
//! new → old  Opened
//!            old: MAINPID to systemd, then drains (agents get GOAWAY, reconnect to new)
//! either     Failed { error }              and exits (new) or resumes (old)
//! ```

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::time::TimeVal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::tunnel::registry::Reservation;

/// Environment variable naming the successor's end of the socket pair.
pub const FD_ENV: &str = "RINGRESS_UPGRADE_FD";
/// Largest message (reservations are sent in chunks well below it).
const MAX_MESSAGE: usize = 192 * 1024;
/// Reservations per `Reservations` message.
pub const RESERVATIONS_PER_MESSAGE: usize = 500;

#[derive(Debug, Error)]
pub enum HandoffError {
    #[error("hand-off socket: {0}")]
    Io(#[from] nix::Error),
    #[error("the other process closed the hand-off socket")]
    Closed,
    #[error("no answer from the other process within {0:?}")]
    Timeout(Duration),
    #[error("bad hand-off message: {0}")]
    Bad(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    Hello { pid: u32, workers: usize },
    Listener { kind: String },
    Reservations { items: Vec<Reservation> },
    ListenersDone,
    Ready,
    Go { items: Vec<Reservation> },
    Opened,
    Failed { error: String },
}

/// One end of the hand-off socket pair.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair, both ends close-on-exec (the spawner clears the
    /// flag on the child's end only, in the child).
    pub fn pair() -> Result<(Channel, OwnedFd), HandoffError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // SAFETY: socketpair just returned these two fds; we own them.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(a), OwnedFd::from_raw_fd(b)) };
        Ok((Channel { fd: a }, b))
    }

    /// The successor's end, from `RINGRESS_UPGRADE_FD` (removed from the
    /// environment so it does not leak further). `None` when not set.
    pub fn from_env() -> Option<Result<Channel, HandoffError>> {
        let v = std::env::var(FD_ENV).ok()?;
        std::env::remove_var(FD_ENV);
        let fd: RawFd = match v.parse() {
            Ok(fd) if fd > 2 => fd,
            _ => return Some(Err(HandoffError::Bad(format!("{FD_ENV}={v}")))),
        };
        // A stale or foreign value must not make us adopt a random fd:
        // it must be a SOCK_SEQPACKET socket.
        // SAFETY: fcntl on an integer fd only queries it.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Some(Err(HandoffError::Bad(format!("{FD_ENV}={v}: not open"))));
        }
        let ty = nix::sys::socket::getsockopt(fd, sockopt::SockType);
        if !matches!(ty, Ok(SockType::SeqPacket)) {
            return Some(Err(HandoffError::Bad(format!(
                "{FD_ENV}={v}: not a hand-off socket"
            ))));
        }
        // SAFETY: checked above that fd is an open socket nobody else owns
        // (it was inherited for us alone).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        Some(Ok(Channel { fd }))
    }

    pub fn send(&self, msg: &Msg) -> Result<(), HandoffError> {
        self.send_with_fd(msg, None)
    }

    /// Sends one message, with `fd` attached when given.
    pub fn send_with_fd(&self, msg: &Msg, fd: Option<RawFd>) -> Result<(), HandoffError> {
        let body = serde_json::to_vec(msg).map_err(|e| HandoffError::Bad(e.to_string()))?;
        if body.len() > MAX_MESSAGE {
            return Err(HandoffError::Bad(format!(
                "message of {} bytes is too large",
                body.len()
            )));
        }
        let iov = [IoSlice::new(&body)];
        let fds;
        let cmsgs: &[ControlMessage] = match fd {
            Some(fd) => {
                fds = [fd];
                &[ControlMessage::ScmRights(&fds)]
            }
            None => &[],
        };
        let cmsg: Vec<ControlMessage> = cmsgs.to_vec();
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EPIPE) | Err(nix::Error::ECONNRESET) => {
                    return Err(HandoffError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one message (and the fd it carries, if any) within
    /// `timeout`.
    pub fn recv(&self, timeout: Duration) -> Result<(Msg, Option<OwnedFd>), HandoffError> {
        let tv = TimeVal::new(
            timeout.as_secs() as libc::time_t,
            timeout.subsec_micros() as libc::suseconds_t,
        );
        setsockopt(self.fd.as_raw_fd(), sockopt::ReceiveTimeout, &tv)?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut cmsg_space = nix::cmsg_space!([RawFd; 4]);
        let (n, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(r) => {
                    let mut got: Option<OwnedFd> = None;
                    for c in r.cmsgs() {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for f in fds {
                                // SAFETY: the kernel installed this fd for
                                // us; it is ours to own (extras are owned
                                // then dropped, i.e. closed).
                                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                                if got.is_none() {
                                    got = Some(owned);
                                }
                            }
                        }
                    }
                    if r.flags.contains(MsgFlags::MSG_TRUNC) {
                        return Err(HandoffError::Bad("message truncated".into()));
                    }
                    break (r.bytes, got);
                }
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => return Err(HandoffError::Timeout(timeout)),
                Err(nix::Error::ECONNRESET) => return Err(HandoffError::Closed),
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Err(HandoffError::Closed);
        }
        let msg: Msg =
            serde_json::from_slice(&buf[..n]).map_err(|e| HandoffError::Bad(e.to_string()))?;
        Ok((msg, fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_a_listening_socket_cross_the_pair() {
        let (a, b) = Channel::pair().expect("pair");
        let b = Channel { fd: b };
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        a.send(&Msg::Hello { pid: 7, workers: 2 }).expect("send");
        a.send_with_fd(
            &Msg::Listener {
                kind: "http".into(),
            },
            Some(l.as_raw_fd()),
        )
        .expect("send fd");
        let (m, fd) = b.recv(Duration::from_secs(1)).expect("recv");
        assert_eq!(m, Msg::Hello { pid: 7, workers: 2 });
        assert!(fd.is_none());
        let (m, fd) = b.recv(Duration::from_secs(1)).expect("recv");
        assert_eq!(
            m,
            Msg::Listener {
                kind: "http".into()
            }
        );
        let got = std::net::TcpListener::from(fd.expect("fd"));
        assert_eq!(got.local_addr().expect("addr"), addr);
        // Same socket: a connection queued on it is accepted through the
        // received copy after the original is closed.
        let c = std::net::TcpStream::connect(addr).expect("connect");
        drop(l);
        let (s, _) = got.accept().expect("accept");
        assert_eq!(s.peer_addr().expect("peer"), c.local_addr().expect("local"));
    }

    #[test]
    fn silence_is_a_timeout_and_a_closed_peer_is_closed() {
        let (a, b) = Channel::pair().expect("pair");
        let err = a.recv(Duration::from_millis(50)).expect_err("timeout");
        assert!(matches!(err, HandoffError::Timeout(_)), "{err}");
        drop(b);
        let err = a.recv(Duration::from_millis(50)).expect_err("closed");
        assert!(matches!(err, HandoffError::Closed), "{err}");
    }

    #[test]
    fn garbage_is_a_bad_message() {
        let (a, b) = Channel::pair().expect("pair");
        nix::sys::socket::send(b.as_raw_fd(), b"{not json", MsgFlags::empty()).expect("send");
        let err = a.recv(Duration::from_millis(200)).expect_err("bad");
        assert!(matches!(err, HandoffError::Bad(_)), "{err}");
    }
}
