//! Tunnel test helpers: a `--dev` edge with its tunnel listener, our agent
//! (`ringress http`) as a child process, and a raw muxado client for
//! hostile-input tests.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::edge::{binary, Edge};
use super::{strip_ansi, wait_until};

/// A `--dev` edge with HTTPS and the tunnel listener on fresh ports.
pub fn dev_edge(config: &str) -> Edge {
    let data = tempfile::Builder::new()
        .prefix("ringress-data-")
        .tempdir()
        .expect("tempdir")
        .keep();
    Edge::builder(config)
        .arg("--dev")
        .arg("--data-dir")
        .arg(data.to_str().expect("utf-8 path"))
        .arg("--listen-https")
        .arg("127.0.0.1:0")
        .start()
}

/// The dev CA of an edge started by `dev_edge`.
pub fn dev_ca(edge: &Edge) -> PathBuf {
    let text = edge.stderr_text();
    let line = text
        .lines()
        .find(|l| l.contains("dev CA: "))
        .unwrap_or_else(|| panic!("no dev CA line; stderr:\n{text}"));
    let start = line.find("dev CA: ").expect("marker") + "dev CA: ".len();
    let rest = &line[start..];
    PathBuf::from(rest.split_whitespace().next().expect("path"))
}

/// A running `ringress http` owned by a test.
pub struct Agent {
    child: Option<Child>,
    pub pid: libc::pid_t,
    dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `ringress http <upstream> <args>` against `edge` and waits for
    /// its public URL.
    pub fn start(edge: &Edge, upstream: &str, args: &[&str]) -> (Agent, String) {
        Agent::start_trusting(edge, &dev_ca(edge), upstream, args)
    }

    /// Like `start`, trusting `ca` for the edge's certificate (a production
    /// edge has no dev CA).
    pub fn start_trusting(
        edge: &Edge,
        ca: &Path,
        upstream: &str,
        args: &[&str],
    ) -> (Agent, String) {
        Agent::try_start_trusting(edge, ca, upstream, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `start`, but a refused or failed start is an `Err` with the
    /// agent's stderr (a restart racing the edge's cleanup of the killed
    /// agent's session gets "already online").
    pub fn try_start(
        edge: &Edge,
        upstream: &str,
        args: &[&str],
    ) -> Result<(Agent, String), String> {
        Agent::try_start_trusting(edge, &dev_ca(edge), upstream, args)
    }

    fn try_start_trusting(
        edge: &Edge,
        ca: &Path,
        upstream: &str,
        args: &[&str],
    ) -> Result<(Agent, String), String> {
        let tunnel = edge.listener_addr("tunnel").to_string();
        let ca = ca.to_str().expect("utf-8 path").to_owned();
        let mut argv: Vec<&str> = vec!["http", upstream, "--server-addr"];
        argv.extend([tunnel.as_str(), "--root-cas", ca.as_str()]);
        argv.extend_from_slice(args);
        // Many agents run in parallel: each inspector on a port of its own.
        if !args.iter().any(|a| a.starts_with("--web-addr")) {
            argv.extend(["--web-addr", "127.0.0.1:0"]);
        }
        let (agent, mut urls) = Agent::try_spawn(&argv, 1)?;
        Ok((agent, urls.remove(0)))
    }

    /// Runs `ringress ARGS` (an agent command: `http`, `start`) and waits
    /// until it printed `urls` public URLs on stdout.
    pub fn spawn(argv: &[&str], urls: usize) -> (Agent, Vec<String>) {
        Agent::try_spawn(argv, urls).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `spawn`, but an agent that exits or prints too few URLs within
    /// 15 s is an `Err` with its stderr.
    pub fn try_spawn(argv: &[&str], urls: usize) -> Result<(Agent, Vec<String>), String> {
        let dir = tempfile::Builder::new()
            .prefix("ringress-agent-")
            .tempdir()
            .expect("tempdir");
        let mut cmd = Command::new(binary());
        cmd.args(argv)
            .env_remove("RUST_LOG")
            .env_remove("RINGRESS_AUTHTOKEN")
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout")).expect("stdout"))
            .stderr(File::create(dir.path().join("stderr")).expect("stderr"));
        let child = cmd.spawn().expect("spawn ringress agent");
        let pid = child.id() as libc::pid_t;
        let mut agent = Agent {
            child: Some(child),
            pid,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found: Vec<String> = agent
                .stdout()
                .lines()
                .filter(|l| l.contains("://"))
                .map(|l| l.trim().to_owned())
                .collect();
            if found.len() >= urls {
                return Ok((agent, found));
            }
            let exited = agent
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                return Err(format!(
                    "agent printed {} of {urls} URLs{}; stderr:\n{}",
                    found.len(),
                    if exited { " and exited" } else { "" },
                    agent.stderr()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The local inspector's address, from the agent's log.
    pub fn inspector(&self) -> SocketAddr {
        let marker = "inspector listening on http://";
        let mut addr = None;
        let ok = wait_until(Duration::from_secs(10), || {
            let text = self.stderr();
            addr = text.lines().find_map(|l| {
                let rest = &l[l.find(marker)? + marker.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c)))
                    .unwrap_or(rest.len());
                rest[..end].parse().ok()
            });
            addr.is_some()
        });
        assert!(ok, "no inspector address; stderr:\n{}", self.stderr());
        addr.expect("address")
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        strip_ansi(&fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default())
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: our own unreaped child.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Waits for exit; the exit code, or None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                self.child = None;
                return Some(s.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: our own unreaped child.
                unsafe { libc::kill(self.pid, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(3);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Host and port of a URL like `https://x.ringress.localhost:8443/path`.
pub fn url_host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.split('/').next().unwrap_or(rest);
    let default = if url.starts_with("https") { 443 } else { 80 };
    match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(default)),
        None => (rest.to_owned(), default),
    }
}

/// `curl -sS -o /dev/null -w WRITE_OUT URL` trusting `ca`, with the URL's
/// host resolved to loopback; returns (stdout, stderr).
pub fn curl_write_out(url: &str, ca: &Path, write_out: &str, extra: &[&str]) -> (String, String) {
    let (host, port) = url_host_port(url);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            write_out,
        ])
        .arg("--cacert")
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ------------------------------------------------------------ raw muxado

pub const TY_RST: u8 = 0;
pub const TY_DATA: u8 = 1;
pub const TY_WNDINC: u8 = 2;
pub const TY_GOAWAY: u8 = 3;
pub const FIN: u8 = 1;
pub const SYN: u8 = 2;

/// One muxado frame.
pub fn frame(ty: u8, flags: u8, id: u32, body: &[u8]) -> Vec<u8> {
    let len = body.len() as u32;
    let mut out = vec![
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        (ty << 4) | flags,
    ];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// What `RawSession::next_event` saw.
#[derive(Debug)]
pub enum WireEvent {
    Frame((u8, u8, u32, Vec<u8>)),
    Closed,
    Silent,
}

/// A hand-driven agent connection: TLS to the tunnel listener, then raw
/// frames.
pub struct RawSession {
    pub tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl RawSession {
    pub fn connect(tunnel: SocketAddr, ca: &Path) -> RawSession {
        let cfg = super::tls::client_config(ca, &[]);
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(Arc::clone(&cfg), name).expect("client");
        let tcp = TcpStream::connect(tunnel).expect("connect tunnel");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        RawSession {
            tls: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// Opens client stream `id` with a typed JSON request (SYN with the
    /// type, then the body).
    pub fn rpc_request(&mut self, id: u32, ty: u32, json: &str) {
        self.send(&frame(TY_DATA, SYN, id, &ty.to_be_bytes()))
            .expect("syn");
        self.send(&frame(TY_DATA, 0, id, json.as_bytes()))
            .expect("body");
    }

    fn take_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        if self.buf.len() < 8 {
            return None;
        }
        let len =
            ((self.buf[0] as usize) << 16) | ((self.buf[1] as usize) << 8) | self.buf[2] as usize;
        if self.buf.len() < 8 + len {
            return None;
        }
        let ty = self.buf[3] >> 4;
        let flags = self.buf[3] & 0xf;
        let id =
            u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) & 0x7fff_ffff;
        let body = self.buf[8..8 + len].to_vec();
        self.buf.drain(..8 + len);
        Some((ty, flags, id, body))
    }

    /// Reads more bytes: `Some(true)` data, `Some(false)` timeout, `None`
    /// EOF or error.
    fn fill(&mut self) -> Option<bool> {
        let mut chunk = [0u8; 16384];
        match self.tls.read(&mut chunk) {
            Ok(0) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Some(false)
            }
            Err(_) => None,
        }
    }

    /// The next thing the edge does: a frame, closing the connection, or
    /// nothing for 5 s.
    pub fn next_event(&mut self) -> WireEvent {
        loop {
            if let Some(f) = self.take_frame() {
                return WireEvent::Frame(f);
            }
            match self.fill() {
                Some(true) => {}
                Some(false) => return WireEvent::Silent,
                None => return WireEvent::Closed,
            }
        }
    }

    /// Reads one frame, `None` on EOF, error or a 5 s silence.
    pub fn read_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if let Some(f) = self.take_frame() {
                return Some(f);
            }
            if self.fill() != Some(true) {
                return None;
            }
        }
    }

    /// Collects the DATA payload of stream `id` until its FIN.
    pub fn read_reply(&mut self, id: u32) -> Option<String> {
        let mut out = Vec::new();
        loop {
            let (ty, flags, sid, body) = self.read_frame()?;
            if sid == id && ty == TY_DATA {
                out.extend_from_slice(&body);
                if flags & FIN != 0 {
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
            }
        }
    }

    /// Authenticates on stream 3 (dev edges accept any token).
    pub fn auth(&mut self) -> String {
        self.auth_on(3)
    }

    /// Authenticates on client stream `id`.
    pub fn auth_on(&mut self, id: u32) -> String {
        self.rpc_request(
            id,
            0,
            r#"{"Version":["3","2"],"ClientId":"","Extra":{"AuthToken":"t"}}"#,
        );
        self.read_reply(id).expect("auth reply")
    }

    /// True once the edge has closed the connection (EOF or reset),
    /// skipping any frames it sends first.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            while self.take_frame().is_some() {}
            if self.fill().is_none() {
                return true;
            }
        }
        false
    }
}
