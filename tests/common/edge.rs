//! A spawned `ringress edge` process owned by one test.
//!
//! Owns: the child process, its tempdir (config file, stderr and stdout logs)
//! and the listen address. Never leaves a process behind: `Drop` sends SIGTERM,
//! then SIGKILL after 3 s, and reaps the child.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{free_port, strip_ansi, wait_until};

/// Marker the edge prints on stderr once every worker listens.
pub const READY_MARKER: &str = "ringress edge ready";
/// How long `start` waits for `READY_MARKER`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `Drop` waits after SIGTERM before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(3);
/// Workers used when the test config does not say.
pub const DEFAULT_WORKERS: usize = 2;

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringress")
}

/// Adds what every test config needs and tests should not repeat: a
/// `workers` line (unless present) and a `[listen]` table on `addr`
/// (unless present).
pub fn prepare_config(toml: &str, addr: SocketAddr) -> String {
    let has_workers = toml.lines().any(|l| {
        let t = l.trim_start();
        t.starts_with("workers") && t["workers".len()..].trim_start().starts_with('=')
    });
    let has_listen = toml.lines().any(|l| l.trim() == "[listen]");
    let mut out = String::new();
    if !has_workers {
        out.push_str(&format!("workers = {DEFAULT_WORKERS}\n"));
    }
    out.push_str(toml);
    if !has_listen {
        out.push_str(&format!("\n[listen]\nhttp = \"{addr}\"\n"));
    }
    out
}

/// Configures an edge before it starts.
pub struct EdgeBuilder {
    config: String,
    envs: Vec<(String, Option<String>)>,
    args: Vec<String>,
}

impl EdgeBuilder {
    /// Sets an environment variable for the child.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), Some(value.to_string())));
        self
    }

    /// Removes an inherited environment variable from the child.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.envs.push((key.to_string(), None));
        self
    }

    /// Forces monoio's epoll driver.
    pub fn legacy_driver(self) -> Self {
        self.env("MONOIO_FORCE_LEGACY_DRIVER", "1")
    }

    /// Adds a command-line argument after `edge --config FILE`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Spawns the edge and waits (at most `READY_TIMEOUT`) for the ready line.
    /// Panics with the edge's stderr if it exits or never becomes ready.
    /// Retries with another port if the free port was taken meanwhile.
    pub fn start(self) -> Edge {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut edge = self.spawn();
            match edge.wait_ready() {
                Ok(()) => return edge,
                Err(msg) => {
                    let in_use = msg.contains("in use") || msg.contains("AddrInUse");
                    if in_use && attempt < 3 {
                        eprintln!("edge port was taken, retrying: {msg}");
                        continue;
                    }
                    panic!("{msg}");
                }
            }
        }
    }

    fn spawn(&self) -> Edge {
        let dir = tempfile::Builder::new()
            .prefix("ringress-edge-")
            .tempdir()
            .expect("create tempdir");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let config_path = dir.path().join("ringress.toml");
        let stderr_path = dir.path().join("stderr.log");
        let stdout_path = dir.path().join("stdout.log");
        fs::write(&config_path, prepare_config(&self.config, addr)).expect("write config");
        let stderr = File::create(&stderr_path).expect("create stderr log");
        let stdout = File::create(&stdout_path).expect("create stdout log");

        let mut cmd = Command::new(binary());
        cmd.arg("edge")
            .arg("--config")
            .arg(&config_path)
            .arg("--listen-http")
            .arg(addr.to_string())
            .args(&self.args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        // Never the shared default tunnel port: parallel tests would share
        // it through SO_REUSEPORT.
        if !self.args.iter().any(|a| a == "--listen-tunnel") {
            cmd.arg("--listen-tunnel").arg("127.0.0.1:0");
        }
        let child = cmd.spawn().expect("spawn ringress edge");
        let pid = child.id() as libc::pid_t;
        Edge {
            child: Some(child),
            pid,
            exit: None,
            http_addr: addr,
            config_path,
            stderr_path,
            dir,
        }
    }
}

/// A running `ringress edge`.
pub struct Edge {
    child: Option<Child>,
    pid: libc::pid_t,
    exit: Option<ExitStatus>,
    http_addr: SocketAddr,
    config_path: PathBuf,
    stderr_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Edge {
    /// Starts an edge with this config (see `prepare_config`) and default options.
    pub fn start(config_toml: &str) -> Edge {
        Edge::builder(config_toml).start()
    }

    /// A builder, for env vars or extra arguments.
    pub fn builder(config_toml: &str) -> EdgeBuilder {
        EdgeBuilder {
            config: config_toml.to_string(),
            envs: Vec::new(),
            args: Vec::new(),
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = self.stderr_text();
            if let Some(line) = text.lines().find(|l| l.contains(READY_MARKER)) {
                if let Some(addr) = parse_http_field(line) {
                    self.http_addr = addr;
                }
                return Ok(());
            }
            if let Some(status) = self.try_exit() {
                return Err(format!(
                    "ringress edge exited before ready ({status}); stderr:\n{text}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ringress edge not ready after {READY_TIMEOUT:?} (no `{READY_MARKER}` on stderr); stderr:\n{text}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address a listener is on, from the ready line (`https`, `tunnel`).
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        let text = self.stderr_text();
        text.lines()
            .filter(|l| l.contains(READY_MARKER))
            .find_map(|l| parse_named_field(l, name))
            .unwrap_or_else(|| panic!("no {name}= on the ready line; stderr:\n{text}"))
    }

    /// The address the HTTP listener is on (from the ready line's `http=`).
    pub fn addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The child's PID.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The tempdir holding config and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the edge was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replaces the config file atomically (same listen address and workers
    /// as at start unless the new text sets them). Does not signal.
    pub fn write_config(&self, config_toml: &str) {
        let tmp = self.dir.path().join("ringress.toml.new");
        fs::write(&tmp, prepare_config(config_toml, self.http_addr)).expect("write config");
        fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Writes a file verbatim as the config (for broken configs).
    pub fn write_config_raw(&self, text: &str) {
        let tmp = self.dir.path().join("ringress.toml.new");
        fs::write(&tmp, text).expect("write config");
        fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Sends a signal to the edge.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with a PID we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid);
    }

    /// SIGHUP: reload the config file.
    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// SIGTERM: graceful shutdown.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGINT: graceful shutdown.
    pub fn sigint(&self) {
        self.signal(libc::SIGINT);
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let child = self.child.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            self.exit = Some(status);
        }
        self.exit
    }

    /// Waits for the edge to exit; `None` if still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Everything the edge wrote on stderr so far, ANSI colours removed.
    pub fn stderr_text(&self) -> String {
        let bytes = fs::read(&self.stderr_path).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&bytes))
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.stderr_text().contains(needle))
    }

    /// Peak resident set size of the edge, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM:")
    }

    /// Current resident set size of the edge, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmRSS:")
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.exit.is_none() && matches!(child.try_wait(), Ok(None)) {
                // SAFETY: our own unreaped child.
                unsafe { libc::kill(self.pid, libc::SIGTERM) };
                let deadline = Instant::now() + KILL_GRACE;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
        if thread::panicking() {
            let text = self.stderr_text();
            let tail: Vec<&str> = text.lines().rev().take(150).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "---- ringress edge stderr (last {} lines) ----\n{}\n---- end ----",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// Extracts `ADDR` from a log line containing `<name>=ADDR`.
pub fn parse_named_field(line: &str, name: &str) -> Option<SocketAddr> {
    let key = format!(" {name}=");
    let start = line.find(&key)? + key.len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',' || c == '}')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Extracts `ADDR` from a log line containing `http=ADDR` (quoted or not).
pub fn parse_http_field(line: &str) -> Option<SocketAddr> {
    let start = line.find("http=")? + "http=".len();
    let rest = line[start..].trim_start_matches(['"', '\'']);
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',' || c == '}')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn proc_status_kib(pid: libc::pid_t, key: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Result of running the binary to completion.
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `ringress ARGS...` with a config file written from `config_toml`
/// (verbatim, no `prepare_config`) as `{CONFIG}` in `args`; kills it after
/// `timeout` and panics. Used for `--check` and failed starts.
pub fn run_ringress(config_toml: &str, args: &[&str], timeout: Duration) -> RunOutput {
    let dir = tempfile::Builder::new()
        .prefix("ringress-run-")
        .tempdir()
        .expect("tempdir");
    let config_path = dir.path().join("ringress.toml");
    fs::write(&config_path, config_toml).expect("write config");
    let config_str = config_path.to_str().expect("utf-8 path").to_string();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{CONFIG}", &config_str))
        .collect();
    let mut cmd = Command::new(binary());
    cmd.args(&args).env_remove("RUST_LOG").env("NO_COLOR", "1");
    super::run_command(cmd, timeout)
}
