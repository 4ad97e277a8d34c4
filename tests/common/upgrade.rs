//! Upgrade test helpers: the successor an edge spawns (cleaned up by PID),
//! the control socket's directory, `ringress edge --upgrade`, and a
//! one-shot HTTPS GET for agent hosts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::edge::{binary, Edge, RunOutput};
use super::{run_command, wait_until};

/// A process our edge spawned as its successor: SIGTERM on drop, SIGKILL
/// after 5 s. Not our child, so liveness comes from /proc.
pub struct Successor(pub libc::pid_t);

impl Successor {
    pub fn alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.0)) {
            // "pid (comm) S ...": a zombie is gone for our purposes.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if !self.alive() {
            return;
        }
        // SAFETY: kill(2) on the PID our edge reported for its successor.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
        if !wait_until(Duration::from_secs(5), || !self.alive()) {
            // SAFETY: as above.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// A tempdir for the control socket, passed to the edge (and so to its
/// successors, which get the same arguments) and to `--upgrade`.
pub struct Ctl {
    dir: tempfile::TempDir,
}

impl Ctl {
    pub fn new() -> Ctl {
        Ctl {
            dir: tempfile::Builder::new()
                .prefix("ringress-ctl-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("edge.sock")
    }

    pub fn socket_str(&self) -> String {
        self.socket().to_str().expect("utf-8").to_owned()
    }
}

/// Runs `ringress edge --config CFG --upgrade --upgrade-socket S ARGS`.
pub fn run_upgrade(config: &Path, ctl: &Ctl, args: &[&str]) -> RunOutput {
    let mut cmd = Command::new(binary());
    cmd.arg("edge")
        .arg("--config")
        .arg(config)
        .arg("--upgrade")
        .arg("--upgrade-socket")
        .arg(ctl.socket())
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    run_command(cmd, Duration::from_secs(90))
}

/// Upgrades, asserting success; the successor, and how long it took.
pub fn upgrade_ok(edge: &Edge, ctl: &Ctl, args: &[&str]) -> (Successor, Duration) {
    let t = Instant::now();
    let out = run_upgrade(edge.config_path(), ctl, args);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "upgrade failed: {}\nedge:\n{}",
        out.stderr,
        edge.stderr_text()
    );
    let pid: libc::pid_t = out
        .stdout
        .trim()
        .strip_prefix("upgraded: new pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no new pid in {:?}", out.stdout));
    (Successor(pid), took)
}

/// GET over HTTPS trusting `ca`, a new connection each time; the status
/// and body.
pub fn https_get(
    addr: SocketAddr,
    ca: &Path,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let cfg = super::tls::client_config(ca, &[b"http/1.1"]);
    let name =
        rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no response: {text:?}"))?;
    Ok((status, text))
}
