//! systemd's readiness protocol (sd_notify): one datagram to the socket in
//! `$NOTIFY_SOCKET`, when there is one. Used for `READY=1` at start,
//! `MAINPID=<successor>` when an upgrade hands the service over, and
//! `STOPPING=1`.
//!
//! Owns: the datagram. Must never: fail the edge (a missing or broken
//! socket is logged at debug and ignored).

use std::os::unix::net::UnixDatagram;

use tracing::debug;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd, if the
/// process runs under it. Returns whether a datagram was sent.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let sent = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    match sent {
        Ok(()) => true,
        Err(e) => {
            debug!(error = %e, "sd_notify failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        // The test binary is single-purpose here; no other test reads it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        let sent = notify("READY=1\nMAINPID=42");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(sent);
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nMAINPID=42");
    }
}
