//! A worker's side of the tunnel table: the agent sessions this worker
//! holds, its cached view of the published table, and the cross-core relay.
//!
//! A request for an agent endpoint uses a session on its own worker when
//! the agent has one here (our agent opens one per worker); otherwise it is
//! relayed to the worker that holds the session: this worker creates a
//! socket pair, keeps one end as the request's upstream connection, and
//! sends the other end over a bounded channel to the owning worker, which
//! opens the proxy stream and pipes the socket to it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use tokio::sync::mpsc;
use tracing::debug;

use super::limit::StreamLimit;
use super::messages::{encode_proxy_preamble, ProxyHeader};
use super::muxado;
use super::proxy_stream::TunnelStream;
use super::registry::{Registry, SessionId, TunnelTable};
use crate::proxy::error_page::EdgeError;
use crate::proxy::io::copy_until_eof;
use crate::proxy::upstream::ClientInfo;
use crate::proxy::upstream_stream::UpStream;
use crate::route::{Binding, TunnelTarget};

/// Open proxy streams per session: under the Rust SDK's hard 512, with
/// room for its RPC and heartbeat streams.
pub const MAX_STREAMS_PER_SESSION: usize = 400;
/// Requests that may wait for a session's stream slot.
pub const MAX_WAITING_PER_SESSION: usize = 4096;
/// Relay requests queued towards one worker.
pub const RELAY_QUEUE: usize = 1024;

/// Asks the worker holding `session` to open a proxy stream and pipe it to
/// `socket`.
pub struct RelayOpen {
    pub session: SessionId,
    pub preamble: Vec<u8>,
    pub socket: std::os::unix::net::UnixStream,
    pub state: Arc<RelayState>,
}

/// What the owning worker did with a relayed request, set before it pipes
/// or drops the socket, so that the requesting worker can tell, on an EOF
/// before any byte, a stream that was never opened (ERR_NGROK_3210) from
/// one the agent closed without answering (ERR_NGROK_3004).
#[derive(Debug, Default)]
pub struct RelayState(AtomicU8);

impl RelayState {
    // 0 (the default): pending, nothing done yet.
    const OPENED: u8 = 1;
    const BUSY: u8 = 2;
    const UNREACHABLE: u8 = 3;

    fn set(&self, result: &Result<TunnelStream, EdgeError>) {
        let v = match result {
            Ok(_) => Self::OPENED,
            Err(e) if *e == EdgeError::AGENT_BUSY => Self::BUSY,
            Err(_) => Self::UNREACHABLE,
        };
        self.0.store(v, Ordering::Release);
    }

    /// The error for a relayed connection that ended before any byte.
    pub fn unanswered(&self) -> EdgeError {
        match self.0.load(Ordering::Acquire) {
            Self::OPENED => EdgeError::UPSTREAM_INVALID,
            Self::BUSY => EdgeError::AGENT_BUSY,
            // UNREACHABLE, or PENDING: the session was gone before the
            // owning worker looked.
            _ => EdgeError::AGENT_UNREACHABLE,
        }
    }
}

pub type RelaySender = mpsc::Sender<RelayOpen>;
pub type RelayReceiver = mpsc::Receiver<RelayOpen>;

/// One relay channel per worker.
pub fn relay_channels(workers: usize) -> (Arc<Vec<RelaySender>>, Vec<RelayReceiver>) {
    let (tx, rx): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::channel(RELAY_QUEUE)).unzip();
    (Arc::new(tx), rx)
}

/// An agent session held by this worker.
pub struct LocalSession {
    pub mux: muxado::Session,
    pub limit: Rc<StreamLimit>,
}

#[allow(clippy::redundant_allocation)]
pub struct WorkerTunnels {
    worker: usize,
    registry: Arc<Registry>,
    cached: RefCell<Rc<Arc<TunnelTable>>>,
    sessions: RefCell<HashMap<SessionId, Rc<LocalSession>>>,
    relays: Arc<Vec<RelaySender>>,
    next_member: Cell<usize>,
}

impl WorkerTunnels {
    /// Agent sessions this worker holds (for the sessions gauge).
    pub fn sessions_held(&self) -> usize {
        self.sessions.borrow().len()
    }

    pub fn new(worker: usize, registry: Arc<Registry>, relays: Arc<Vec<RelaySender>>) -> Self {
        let cached = RefCell::new(Rc::new(registry.table()));
        WorkerTunnels {
            worker,
            registry,
            cached,
            sessions: RefCell::new(HashMap::new()),
            relays,
            next_member: Cell::new(0),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The current table, re-read only when its generation moved.
    #[allow(clippy::redundant_allocation)]
    /// After an upgrade, requests for a host whose agent is reconnecting
    /// from the old process wait for it instead of getting a 404: returns
    /// false at once when `host` is not awaited (the usual case, no
    /// allocation), else waits until the tunnel table changes (true: look
    /// the host up again) or the hand-off reservation ends (false).
    pub async fn wait_for_handoff(&self, scheme: crate::route::Scheme, host: &str) -> bool {
        let table = self.table();
        if table.awaiting.is_empty() {
            return false;
        }
        let Some(until) = table.awaiting.get(&(scheme, host.to_owned())).copied() else {
            return false;
        };
        let generation = table.generation;
        drop(table);
        while self.registry.generation() == generation {
            if std::time::Instant::now() >= until {
                return false;
            }
            monoio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    pub fn table(&self) -> Rc<Arc<TunnelTable>> {
        let generation = self.registry.generation();
        let mut cached = self.cached.borrow_mut();
        if cached.generation != generation {
            *cached = Rc::new(self.registry.table());
        }
        cached.clone()
    }

    pub fn add_session(
        &self,
        id: SessionId,
        mux: muxado::Session,
        pressure: Arc<std::sync::atomic::AtomicBool>,
    ) -> Rc<LocalSession> {
        let s = Rc::new(LocalSession {
            mux,
            limit: StreamLimit::with_pressure(
                MAX_STREAMS_PER_SESSION,
                MAX_WAITING_PER_SESSION,
                pressure,
            ),
        });
        self.sessions.borrow_mut().insert(id, s.clone());
        s
    }

    pub fn remove_session(&self, id: SessionId) {
        self.sessions.borrow_mut().remove(&id);
    }

    /// Whether a session on this worker has no stream slot left.
    pub fn is_full(&self, binding: &Binding) -> bool {
        binding.worker == self.worker
            && self
                .local(binding.session)
                .is_some_and(|s| s.limit.in_use() >= MAX_STREAMS_PER_SESSION)
    }

    /// Whether requests on this worker wait for one of the session's
    /// slots (then a finished stream is closed, not kept idle).
    pub fn has_waiters(&self, session: SessionId) -> bool {
        self.local(session).is_some_and(|s| s.limit.has_waiters())
    }

    fn local(&self, id: SessionId) -> Option<Rc<LocalSession>> {
        self.sessions.borrow().get(&id).cloned()
    }

    /// Chooses the binding for one request: members in turn (pooling), and
    /// within the member a session on this worker when it has one.
    pub fn pick<'a>(&self, target: &'a TunnelTarget) -> Result<&'a Binding, EdgeError> {
        let n = target.members.len();
        if n == 0 {
            return Err(EdgeError::NO_ENDPOINT);
        }
        let i = self.next_member.get();
        self.next_member.set(i.wrapping_add(1));
        let member = &target.members[i % n];
        let sessions = self.sessions.borrow();
        member
            .sessions
            .iter()
            .find(|b| b.worker == self.worker && sessions.contains_key(&b.session))
            .or_else(|| member.sessions.iter().find(|b| b.worker != self.worker))
            .ok_or(EdgeError::AGENT_UNREACHABLE)
    }

    /// Opens a proxy stream for `binding`: locally, or through the relay.
    pub async fn open(
        &self,
        binding: &Binding,
        client: &ClientInfo,
        wait: Duration,
    ) -> Result<UpStream, EdgeError> {
        let mut preamble = Vec::with_capacity(160);
        encode_proxy_preamble(
            &ProxyHeader {
                id: binding.tunnel_id.to_string(),
                client_addr: client.addr.to_string(),
                proto: client.proto.to_owned(),
                edge_type: String::new(),
                passthrough_tls: false,
            },
            &mut preamble,
        );
        if binding.worker == self.worker {
            let session = self
                .local(binding.session)
                .ok_or(EdgeError::AGENT_UNREACHABLE)?;
            return open_local(&session, preamble, wait)
                .await
                .map(UpStream::Tunnel);
        }
        let tx = self
            .relays
            .get(binding.worker)
            .ok_or(EdgeError::AGENT_UNREACHABLE)?;
        let (mine, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|_| EdgeError::AGENT_UNREACHABLE)?;
        theirs
            .set_nonblocking(true)
            .and_then(|_| mine.set_nonblocking(true))
            .map_err(|_| EdgeError::AGENT_UNREACHABLE)?;
        let state = Arc::new(RelayState::default());
        tx.try_send(RelayOpen {
            session: binding.session,
            preamble,
            socket: theirs,
            state: state.clone(),
        })
        .map_err(|_| EdgeError::AGENT_BUSY)?;
        monoio::net::UnixStream::from_std(mine)
            .map(|s| UpStream::Relay(s, state))
            .map_err(|_| EdgeError::AGENT_UNREACHABLE)
    }

    /// Serves relay requests from other workers for sessions held here.
    pub async fn relay_loop(self: Rc<Self>, mut rx: RelayReceiver, wait: Duration) {
        while let Some(req) = rx.recv().await {
            let Some(session) = self.local(req.session) else {
                debug!(session = req.session, "relay for a session that is gone");
                continue;
            };
            monoio::spawn(relay_one(session, req, wait));
        }
    }
}

async fn open_local(
    session: &LocalSession,
    preamble: Vec<u8>,
    wait: Duration,
) -> Result<TunnelStream, EdgeError> {
    let permit = match session.limit.try_acquire() {
        Some(p) => p,
        None => match monoio::time::timeout(wait, session.limit.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) | Err(_) => return Err(EdgeError::AGENT_BUSY),
        },
    };
    let stream = session
        .mux
        .open()
        .await
        .map_err(|_| EdgeError::AGENT_UNREACHABLE)?;
    Ok(TunnelStream::new(stream, preamble, permit))
}

/// The owning worker's half of a relayed request.
async fn relay_one(session: Rc<LocalSession>, req: RelayOpen, wait: Duration) {
    let RelayOpen {
        preamble,
        socket,
        state,
        ..
    } = req;
    let Ok(socket) = monoio::net::UnixStream::from_std(socket) else {
        return;
    };
    let opened = open_local(&session, preamble, wait).await;
    state.set(&opened);
    let Ok(stream) = opened else {
        // Dropping the socket tells the requesting worker (EOF), which
        // reads `state` for the reason.
        return;
    };
    pipe(socket, stream).await;
}

/// Copies bytes both ways until both directions have ended; each EOF is
/// passed on as a half-close.
pub async fn pipe<A, B>(a: A, b: B)
where
    A: AsyncReadRent + AsyncWriteRent + monoio::io::Split,
    B: AsyncReadRent + AsyncWriteRent + monoio::io::Split,
{
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let last = std::cell::Cell::new(std::time::Instant::now());
    monoio::join!(
        copy_until_eof(&mut ar, &mut bw, &last),
        copy_until_eof(&mut br, &mut aw, &last)
    );
}
