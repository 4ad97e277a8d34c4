//! Zero-downtime restart and binary upgrade of the edge.
//!
//! The running edge (old) starts its successor (new) from the binary on
//! disk with its own arguments, hands it every listening socket (the same
//! socket objects, so connections waiting in the kernel's accept queues
//! are never lost), stops accepting only once the successor accepts, closes
//! its control-plane resources, lets the successor open them, then drains
//! as on SIGTERM. The wire and its sequence are in `handoff`.
//!
//! Triggers: SIGUSR2, or `ringress edge --upgrade`, which asks the running
//! edge over its control socket (`<data_dir>/edge.sock`, or
//! `--upgrade-socket`) and waits for the outcome. A successor that fails
//! (bad config, bind error, crash) leaves the old edge serving, and the
//! reason goes back to whoever asked.
//!
//! Owns: spawning the successor, both sides of the sequence, the control
//! socket, the close hooks. Must never: run on a worker, or stop the old
//! process from accepting before its successor accepts.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::{info, warn};

use super::handoff::{Channel, HandoffError, Msg, RESERVATIONS_PER_MESSAGE};
use super::listeners::Listeners;
use super::worker::Shared;
use crate::tunnel::registry::{Registry, Reservation};

/// How long the successor may take to load its config and start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the successor may take to open the control-plane resources.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the old process waits for its accept loops to end.
const STOP_ACCEPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `ringress edge --upgrade` waits for the outcome.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The control socket's file name in the data dir.
pub const SOCKET_NAME: &str = "edge.sock";

#[derive(Debug, Error)]
pub enum UpgradeError {
    #[error("cannot start the new process {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("the new process refused to take over: {0}")]
    Refused(String),
    #[error("the new process exited before taking over ({0})")]
    Exited(String),
    #[error(transparent)]
    Handoff(#[from] HandoffError),
    #[error("an upgrade is only possible from a running edge")]
    NotRunning,
    #[error("cannot reach the running edge at {path}: {source} (is it running with this data dir? pass --upgrade-socket)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the running edge did not answer: {0}")]
    Request(String),
    #[error("upgrade failed: {0}")]
    Failed(String),
}

/// How this process was started, to start its successor the same way.
#[derive(Debug, Clone)]
pub struct Restart {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl Restart {
    /// This process's binary path and arguments. After a binary upgrade
    /// the path names the new file (the kernel reports the running, now
    /// deleted, one with a ` (deleted)` suffix, which is dropped).
    pub fn current() -> Restart {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ringress"));
        let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(s) => PathBuf::from(s),
            None => exe,
        };
        Restart {
            exe,
            args: std::env::args_os().skip(1).collect(),
        }
    }
}

/// Control-plane resources the old process closes, in order, after its
/// successor accepts and before the successor may open them (interface 4:
/// the redb store, whose file lock allows one process at a time). The
/// successor opens them (with retry) between `Go` and `Opened`.
#[derive(Default)]
pub struct CloseHooks {
    hooks: Vec<(String, Box<dyn FnOnce() + Send>)>,
}

impl CloseHooks {
    pub fn new() -> CloseHooks {
        CloseHooks::default()
    }

    /// Adds a hook; hooks run in the order they were added.
    pub fn add(&mut self, name: &str, hook: Box<dyn FnOnce() + Send>) {
        self.hooks.push((name.to_owned(), hook));
    }

    fn run(&mut self) {
        for (name, hook) in self.hooks.drain(..) {
            let t = Instant::now();
            hook();
            info!(resource = %name, took = ?t.elapsed(), "closed for the successor");
        }
    }
}

/// What the old process needs to hand itself over.
pub struct HandOff<'a> {
    pub restart: &'a Restart,
    pub listeners: &'a mut Listeners,
    pub registry: &'a Registry,
    pub shared: &'a Shared,
    pub hooks: &'a mut CloseHooks,
}

/// The old side: starts the successor and hands over. `Ok(pid)` once the
/// successor serves (this process has then stopped accepting and must
/// drain); `Err` while this process still serves as before.
pub fn hand_off(h: HandOff<'_>) -> Result<u32, UpgradeError> {
    let (chan, theirs) = Channel::pair()?;
    let child_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(&h.restart.exe);
    cmd.args(&h.restart.args)
        .env(super::handoff::FD_ENV, child_fd.to_string())
        .stdin(Stdio::null());
    // SAFETY: runs in the child between fork and exec; fcntl is
    // async-signal-safe and touches only the inherited fd.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(child_fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| UpgradeError::Spawn {
        exe: h.restart.exe.clone(),
        source,
    })?;
    drop(theirs);
    let pid = child.id();
    info!(pid, exe = %h.restart.exe.display(), "upgrade: new process started");
    match until_ready(&chan, &mut child, h.listeners, h.registry) {
        Ok(()) => {}
        Err(e) => {
            reap(&mut child);
            return Err(e);
        }
    }
    // The successor accepts on the same sockets: stop accepting here.
    h.shared.accepting.store(false, Ordering::Release);
    let deadline = Instant::now() + STOP_ACCEPT_TIMEOUT;
    while h.shared.accept_loops.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    h.listeners.release_all();
    info!(
        pid,
        "upgrade: the new process accepts; this one stopped accepting"
    );
    h.hooks.run();
    let items = h.registry.export_reservations();
    chan.send(&Msg::Go { items })?;
    match chan.recv(OPEN_TIMEOUT) {
        Ok((Msg::Opened, _)) => {}
        Ok((other, _)) => warn!(?other, "upgrade: unexpected message instead of Opened"),
        Err(e) => warn!(error = %e, "upgrade: the new process did not confirm its control plane"),
    }
    if super::notify::notify(&format!("MAINPID={pid}")) {
        info!(pid, "upgrade: told systemd the new main PID");
    }
    // The child lives on; it is reparented when this process exits.
    drop(child);
    Ok(pid)
}

fn until_ready(
    chan: &Channel,
    child: &mut Child,
    listeners: &Listeners,
    registry: &Registry,
) -> Result<(), UpgradeError> {
    let recv = |chan: &Channel, child: &mut Child| match chan.recv(START_TIMEOUT) {
        Ok((Msg::Failed { error }, _)) => Err(UpgradeError::Refused(error)),
        Ok((m, _)) => Ok(m),
        Err(HandoffError::Closed) => Err(UpgradeError::Exited(exit_status(child))),
        Err(e) => Err(e.into()),
    };
    match recv(chan, child)? {
        Msg::Hello { pid, workers } => {
            info!(pid, workers, "upgrade: new process loaded its config")
        }
        other => return Err(UpgradeError::Failed(format!("unexpected {other:?}"))),
    }
    for k in listeners.kept() {
        chan.send_with_fd(
            &Msg::Listener {
                kind: k.kind.clone(),
            },
            Some(k.socket.as_raw_fd()),
        )?;
    }
    let items = registry.export_reservations();
    for chunk in items.chunks(RESERVATIONS_PER_MESSAGE) {
        chan.send(&Msg::Reservations {
            items: chunk.to_vec(),
        })?;
    }
    chan.send(&Msg::ListenersDone)?;
    match recv(chan, child)? {
        Msg::Ready => Ok(()),
        other => Err(UpgradeError::Failed(format!("unexpected {other:?}"))),
    }
}

fn exit_status(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.to_string(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => return "still running".into(),
            Err(e) => return e.to_string(),
        }
    }
}

/// Ends a successor that did not take over (it is ours: we spawned it).
fn reap(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(child.try_wait(), Ok(None)) {
            warn!(pid = child.id(), "upgrade: killing the new process");
            let _ = child.kill();
        }
    }
    let _ = child.wait();
}

/// The new side, talking to the process it takes over from.
pub struct Predecessor {
    chan: Channel,
}

impl Predecessor {
    /// The hand-off socket when this process was started by an upgrade.
    pub fn from_env() -> Option<Result<Predecessor, UpgradeError>> {
        Channel::from_env().map(|r| r.map(|chan| Predecessor { chan }).map_err(Into::into))
    }

    /// Tells the old process the config is valid; receives its listening
    /// sockets and its agents' URL reservations.
    pub fn hello(&self, workers: usize) -> Result<(Listeners, Vec<Reservation>), UpgradeError> {
        self.chan.send(&Msg::Hello {
            pid: std::process::id(),
            workers,
        })?;
        let mut listeners = Listeners::new();
        let mut reservations = Vec::new();
        loop {
            match self.chan.recv(START_TIMEOUT)? {
                (Msg::Listener { kind }, Some(fd)) => {
                    let socket = std::net::TcpListener::from(fd);
                    let _ = socket.set_nonblocking(true);
                    listeners.inherit(&kind, socket);
                }
                (Msg::Reservations { items }, _) => reservations.extend(items),
                (Msg::ListenersDone, _) => return Ok((listeners, reservations)),
                (other, _) => {
                    return Err(UpgradeError::Failed(format!(
                        "unexpected {other:?} from the running edge"
                    )))
                }
            }
        }
    }

    /// Workers run: the old process may stop accepting. Then waits for it
    /// to close its control-plane resources (`Go`, or its exit), returning
    /// its last reservations.
    pub fn ready(&self) -> Result<Vec<Reservation>, UpgradeError> {
        self.chan.send(&Msg::Ready)?;
        match self.chan.recv(START_TIMEOUT) {
            Ok((Msg::Go { items }, _)) => Ok(items),
            Ok((other, _)) => Err(UpgradeError::Failed(format!("unexpected {other:?}"))),
            // Gone: whatever it held is released.
            Err(HandoffError::Closed) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Control-plane resources are open: the old process may drain.
    pub fn opened(&self) {
        let _ = self.chan.send(&Msg::Opened);
    }

    /// The takeover failed: tells the old process why (it keeps serving).
    pub fn fail(&self, reason: &str) {
        let _ = self.chan.send(&Msg::Failed {
            error: reason.to_owned(),
        });
    }
}

/// The control socket `ringress edge --upgrade` talks to: one request
/// line (`upgrade`), one answer line (`ok <pid>` or `error <reason>`).
pub struct ControlSocket {
    path: PathBuf,
    ino: u64,
}

/// A request that came in on the control socket; answer it with
/// `respond`.
pub struct ControlRequest {
    stream: UnixStream,
}

impl ControlRequest {
    pub fn respond(mut self, result: &Result<u32, String>) {
        let line = match result {
            Ok(pid) => format!("ok {pid}\n"),
            Err(e) => format!("error {}\n", e.replace('\n', " ")),
        };
        let _ = self.stream.write_all(line.as_bytes());
    }
}

impl ControlSocket {
    /// Binds `path` (replacing a stale file; a successor replaces its
    /// predecessor's) and serves it on a thread, handing each upgrade
    /// request to `on_request`.
    pub fn bind(
        path: &Path,
        on_request: Box<dyn Fn(ControlRequest) + Send>,
    ) -> std::io::Result<ControlSocket> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let ino = std::fs::metadata(path)?.ino();
        std::thread::Builder::new()
            .name("ringress-ctl".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut line = String::new();
                    let Ok(clone) = stream.try_clone() else {
                        continue;
                    };
                    if BufReader::new(clone).read_line(&mut line).is_err() {
                        continue;
                    }
                    if line.trim() == "upgrade" {
                        on_request(ControlRequest { stream });
                    } else {
                        let _ = (&stream).write_all(b"error unknown request\n");
                    }
                }
            })?;
        Ok(ControlSocket {
            path: path.to_owned(),
            ino,
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Only our own file: after an upgrade the path is the successor's.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `ringress edge --upgrade`: asks the edge listening on `socket` to
/// upgrade and waits for the outcome; the successor's PID.
pub fn request(socket: &Path, timeout: Duration) -> Result<u32, UpgradeError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| UpgradeError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| UpgradeError::Request(e.to_string()))?;
    stream
        .write_all(b"upgrade\n")
        .map_err(|e| UpgradeError::Request(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| UpgradeError::Request(e.to_string()))?;
    let line = line.trim();
    if let Some(pid) = line.strip_prefix("ok ") {
        return pid
            .parse()
            .map_err(|_| UpgradeError::Request(format!("bad answer {line:?}")));
    }
    match line.strip_prefix("error ") {
        Some(reason) => Err(UpgradeError::Failed(reason.to_owned())),
        None if line.is_empty() => Err(UpgradeError::Request(
            "the edge closed the connection without an answer".into(),
        )),
        None => Err(UpgradeError::Request(format!("bad answer {line:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_socket_answers_and_removes_only_its_own_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SOCKET_NAME);
        let sock = ControlSocket::bind(
            &path,
            Box::new(|req: ControlRequest| req.respond(&Ok(4242))),
        )
        .expect("bind");
        assert_eq!(request(&path, Duration::from_secs(5)).expect("ok"), 4242);
        // A successor binding the same path takes it over.
        let next = ControlSocket::bind(
            &path,
            Box::new(|req: ControlRequest| req.respond(&Err("bad config".into()))),
        )
        .expect("bind");
        drop(sock);
        assert!(path.exists(), "the old socket must not remove the new one");
        let err = request(&path, Duration::from_secs(5)).expect_err("refused");
        assert_eq!(err.to_string(), "upgrade failed: bad config");
        drop(next);
        assert!(!path.exists());
    }

    #[test]
    fn no_edge_on_the_socket_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err =
            request(&dir.path().join("none.sock"), Duration::from_secs(1)).expect_err("no edge");
        assert!(
            err.to_string().contains("cannot reach the running edge"),
            "{err}"
        );
    }
}
