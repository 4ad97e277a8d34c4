//! A worker: one thread pinned to one core, one monoio runtime, its own
//! SO_REUSEPORT listener, its own upstream pool. It owns every connection
//! it accepts for the connection's whole life.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;
use tracing::{debug, error, info, warn};

use super::catch_unwind::{panic_message, CatchUnwind};
use super::drain::Drain;
use super::snapshot::{SnapshotCache, SnapshotStore};
use crate::observe::ListenerKind;
use crate::proxy::conn;
use crate::proxy::upstream_pool::UpstreamPool;
use crate::route::Scheme;
use crate::tls::acme::Challenges;
use crate::tls::server_config::ALPN_H2;
use crate::tunnel::registry::Registry;
use crate::tunnel::worker_tunnels::{RelayReceiver, RelaySender, WorkerTunnels};

/// State shared by every worker and the control thread: the snapshot
/// store and the stop flags. Read-mostly.
pub struct Shared {
    pub store: Arc<SnapshotStore>,
    /// Drain: stop accepting, close idle connections, finish in-flight
    /// ones, then end the worker.
    pub stopping: AtomicBool,
    /// Cleared when an upgraded successor accepts on the same sockets:
    /// stop accepting only (the drain follows once it has taken over).
    pub accepting: AtomicBool,
    /// Accept loops still running, across workers.
    pub accept_loops: AtomicUsize,
    /// Pending ACME HTTP-01 challenges (written by the ACME manager).
    pub challenges: Arc<Challenges>,
    /// Agent sessions and their endpoints.
    pub registry: Arc<Registry>,
    /// Cross-core relay channels, one per worker.
    pub relays: Arc<Vec<RelaySender>>,
}

/// Per-worker state, reachable from every connection task of that worker.
pub struct WorkerCtx {
    pub id: usize,
    pub snapshots: SnapshotCache,
    pub pool: RefCell<UpstreamPool>,
    pub drain: Drain,
    /// Fired when the worker stops accepting (before or with `drain`).
    pub stop_accept: Drain,
    pub active: Cell<usize>,
    /// The worker's share of `Shared::accept_loops`.
    shared: Arc<Shared>,
    pub challenges: Arc<Challenges>,
    pub tunnels: Rc<WorkerTunnels>,
    /// Metrics, events and inspector capture (worker-local).
    pub obs: crate::observe::WorkerObs,
}

/// Which io driver a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    Legacy,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Legacy => "legacy",
        }
    }
}

/// io_uring setup flags. A worker's ring is only ever touched by its own
/// thread, which is what SINGLE_ISSUER promises the kernel; COOP_TASKRUN
/// stops the kernel from interrupting the worker to run completion work.
/// `RINGRESS_URING_SETUP=plain|coop|single` picks another set (for A/B
/// measurements; see docs/performance.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UringSetup {
    Plain,
    Coop,
    CoopSingleIssuer,
    DeferTaskrun,
}

impl UringSetup {
    const DEFAULT: UringSetup = UringSetup::CoopSingleIssuer;

    fn from_env() -> UringSetup {
        match std::env::var("RINGRESS_URING_SETUP").as_deref() {
            Ok("plain") => UringSetup::Plain,
            Ok("coop") => UringSetup::Coop,
            Ok("single") => UringSetup::CoopSingleIssuer,
            Ok("defer") => UringSetup::DeferTaskrun,
            _ => UringSetup::DEFAULT,
        }
    }

    fn builder(self) -> io_uring::Builder {
        let mut b = io_uring::IoUring::builder();
        match self {
            UringSetup::Plain => {}
            UringSetup::Coop => {
                b.setup_coop_taskrun();
            }
            UringSetup::CoopSingleIssuer => {
                b.setup_coop_taskrun().setup_single_issuer();
            }
            UringSetup::DeferTaskrun => {
                b.setup_coop_taskrun()
                    .setup_single_issuer()
                    .setup_defer_taskrun();
            }
        }
        b
    }
}

/// io_uring submission queue entries per worker.
const URING_ENTRIES: u32 = 1024;

/// How long an ending worker keeps its runtime turning so that dropped
/// I/O finishes cancelling and its sockets close.
const SETTLE: Duration = Duration::from_millis(50);

/// How often a worker looks at the shared stop flag.
const TICK: Duration = Duration::from_millis(50);

pub struct WorkerSpec {
    pub id: usize,
    pub core: Option<core_affinity::CoreId>,
    pub http: std::net::TcpListener,
    /// The HTTPS listener and this worker's rustls configuration.
    pub https: Option<(std::net::TcpListener, Arc<rustls::ServerConfig>)>,
    /// The agent tunnel listener and its rustls configuration.
    pub tunnel: Option<(std::net::TcpListener, Arc<rustls::ServerConfig>)>,
    /// Relay requests from other workers for sessions held here.
    pub relay_rx: Option<RelayReceiver>,
    pub shared: Arc<Shared>,
    pub grace: Duration,
    pub obs: crate::observe::WorkerObs,
}

/// Runs a worker on the current thread until it has drained. Reports the
/// driver it chose through `started`.
pub fn run(spec: WorkerSpec, started: std::sync::mpsc::Sender<Result<DriverKind, String>>) {
    if let Some(core) = spec.core {
        if !core_affinity::set_for_current(core) {
            warn!(
                worker = spec.id,
                core = core.id,
                "could not pin worker to its core"
            );
        }
    }
    let force_legacy = std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some_and(|v| v != "0");
    if !force_legacy {
        let setup = UringSetup::from_env();
        // Setup flags need newer kernels; without them io_uring still runs.
        for flags in [setup, UringSetup::Plain] {
            match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(URING_ENTRIES)
                .uring_builder(flags.builder())
                .enable_timer()
                .build()
            {
                Ok(mut rt) => {
                    debug!(worker = spec.id, setup = ?flags, "io_uring runtime built");
                    let _ = started.send(Ok(DriverKind::IoUring));
                    rt.block_on(worker_main(spec));
                    return;
                }
                Err(e) if flags != UringSetup::Plain => {
                    debug!(worker = spec.id, setup = ?flags, error = %e, "io_uring setup flags refused; retrying without");
                }
                Err(e) => {
                    warn!(worker = spec.id, error = %e, "io_uring unavailable; using the legacy driver")
                }
            }
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => {
            let _ = started.send(Ok(DriverKind::Legacy));
            rt.block_on(worker_main(spec));
        }
        Err(e) => {
            let _ = started.send(Err(format!(
                "worker {}: cannot build a runtime: {e}",
                spec.id
            )));
        }
    }
}

async fn worker_main(spec: WorkerSpec) {
    let WorkerSpec {
        id,
        http,
        https,
        tunnel,
        relay_rx,
        shared,
        grace,
        obs,
        ..
    } = spec;
    let tunnels = Rc::new(WorkerTunnels::new(
        id,
        shared.registry.clone(),
        shared.relays.clone(),
    ));
    let ctx = Rc::new(WorkerCtx {
        id,
        snapshots: SnapshotCache::new(shared.store.clone()),
        pool: RefCell::new(UpstreamPool::default()),
        drain: Drain::new(),
        stop_accept: Drain::new(),
        active: Cell::new(0),
        shared: shared.clone(),
        challenges: shared.challenges.clone(),
        tunnels: tunnels.clone(),
        obs,
    });
    if ctx.obs.metrics_on() {
        monoio::spawn(publish_stats(ctx.clone()));
    }
    if let Some(rx) = relay_rx {
        monoio::spawn(tunnels.relay_loop(rx, Duration::from_secs(10)));
    }
    let listener = match TcpListener::from_std(http) {
        Ok(l) => l,
        Err(e) => {
            warn!(worker = id, error = %e, "cannot register listener");
            return;
        }
    };
    monoio::spawn(watch_stop(ctx.clone(), shared.clone()));
    let https_loop = match https {
        Some((std_listener, tls)) => match TcpListener::from_std(std_listener) {
            Ok(l) => Some(monoio::spawn(accept_loop(
                l,
                ctx.clone(),
                Listener::Https(monoio_rustls::TlsAcceptor::from(tls)),
            ))),
            Err(e) => {
                warn!(worker = id, error = %e, "cannot register the HTTPS listener");
                None
            }
        },
        None => None,
    };
    let tunnel_loop = match tunnel {
        Some((std_listener, tls)) => match TcpListener::from_std(std_listener) {
            Ok(l) => Some(monoio::spawn(accept_loop(
                l,
                ctx.clone(),
                Listener::Tunnel(monoio_rustls::TlsAcceptor::from(tls)),
            ))),
            Err(e) => {
                warn!(worker = id, error = %e, "cannot register the tunnel listener");
                None
            }
        },
        None => None,
    };
    accept_loop(listener, ctx.clone(), Listener::Http).await;
    if let Some(h) = https_loop {
        h.await;
    }
    if let Some(h) = tunnel_loop {
        h.await;
    }
    // After an upgrade hand-off the worker has stopped accepting but
    // serves on until the successor has taken over and the drain starts.
    if !ctx.drain.is_fired() {
        ctx.drain.wait().await;
    }

    // Drain: idle keep-alive connections close at once (they wait on the
    // drain signal); in-flight exchanges finish, up to the grace period.
    let deadline = Instant::now() + grace;
    while ctx.active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if ctx.active.get() > 0 {
        warn!(
            worker = id,
            open = ctx.active.get(),
            "grace period over; closing remaining connections"
        );
    }
    ctx.pool.borrow_mut().clear();
    // Let the driver finish the cancellations of dropped reads: a socket
    // whose read was still in flight is closed only once its cancellation
    // completes, and a runtime dropped before that would leave the socket
    // open (silent to its client) until the process exits, which after an
    // upgrade can be much later than this worker's end.
    monoio::time::sleep(SETTLE).await;
    debug!(worker = id, "worker stopped");
}

async fn watch_stop(ctx: Rc<WorkerCtx>, shared: Arc<Shared>) {
    loop {
        if !shared.accepting.load(Ordering::Acquire) {
            ctx.stop_accept.fire();
        }
        if shared.stopping.load(Ordering::Acquire) {
            ctx.stop_accept.fire();
            ctx.drain.fire();
            // Idle upstream connections now, not at the worker's end: an
            // idle relayed connection holds a stream slot of another
            // worker's agent session, whose drain waits for its slots.
            ctx.pool.borrow_mut().clear();
            return;
        }
        monoio::time::sleep(TICK).await;
    }
}

/// Publishes this worker's counters for `/metrics` until the worker stops.
async fn publish_stats(ctx: Rc<WorkerCtx>) {
    loop {
        ctx.obs
            .publish(ctx.active.get() as u64, ctx.tunnels.sessions_held() as u64);
        if ctx.drain.is_fired() {
            return;
        }
        monoio::select! {
            _ = monoio::time::sleep(crate::observe::worker::FLUSH_EVERY) => {}
            _ = ctx.drain.wait() => {}
        }
    }
}

/// Counts a running accept loop in `Shared::accept_loops`.
struct AcceptLoopGuard(Arc<Shared>);

impl AcceptLoopGuard {
    fn new(shared: &Arc<Shared>) -> AcceptLoopGuard {
        shared.accept_loops.fetch_add(1, Ordering::AcqRel);
        AcceptLoopGuard(shared.clone())
    }
}

impl Drop for AcceptLoopGuard {
    fn drop(&mut self) {
        self.0.accept_loops.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Decrements the worker's connection count when a connection task ends.
struct ActiveGuard(Rc<WorkerCtx>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
    }
}

/// What a listener speaks.
enum Listener {
    Http,
    Https(monoio_rustls::TlsAcceptor),
    /// Agents (ngrok's agent protocol over TLS).
    Tunnel(monoio_rustls::TlsAcceptor),
}

impl Listener {
    fn observed_as(&self) -> ListenerKind {
        match self {
            Listener::Http => ListenerKind::Http,
            Listener::Https(_) => ListenerKind::Https,
            Listener::Tunnel(_) => ListenerKind::Tunnel,
        }
    }
}

/// Seed limit: ClientHello to handshake completion.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// One accepted connection, from the handshake (if any) to its end.
async fn connection(
    stream: monoio::net::TcpStream,
    peer: std::net::SocketAddr,
    ctx: Rc<WorkerCtx>,
    listener: Rc<Listener>,
) {
    match &*listener {
        Listener::Http => conn::serve(stream, peer, ctx, Scheme::Http).await,
        Listener::Https(acceptor) => {
            let Some(tls) = tls_accept(acceptor, stream, peer, &ctx, ListenerKind::Https).await
            else {
                return;
            };
            if tls.alpn_protocol().as_deref() == Some(ALPN_H2) {
                serve_h2(tls, peer, ctx).await;
            } else {
                conn::serve(tls, peer, ctx, Scheme::Https).await;
            }
        }
        Listener::Tunnel(acceptor) => {
            if let Some(tls) = tls_accept(acceptor, stream, peer, &ctx, ListenerKind::Tunnel).await
            {
                crate::tunnel::edge_session::serve(tls, peer, ctx).await;
            }
        }
    }
}

/// The server side of a TLS handshake (first flight corked), bounded by
/// the seed's 60 s; failures are logged at debug and end the connection.
async fn tls_accept(
    acceptor: &monoio_rustls::TlsAcceptor,
    stream: monoio::net::TcpStream,
    peer: std::net::SocketAddr,
    ctx: &WorkerCtx,
    kind: ListenerKind,
) -> Option<monoio_rustls::ServerTlsStream<crate::tls::cork::CorkedTcp>> {
    let stream = crate::tls::cork::CorkedTcp::new(stream);
    let result = monoio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
    ctx.obs.tls_handshake(kind, matches!(result, Ok(Ok(_))));
    match result {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// An HTTP/2 connection: each stream is proxied by `proxy::h2_stream`.
async fn serve_h2<IO>(io: IO, peer: std::net::SocketAddr, ctx: Rc<WorkerCtx>)
where
    IO: monoio::io::AsyncReadRent + monoio::io::AsyncWriteRent + Unpin + 'static,
{
    let peer_ip: Rc<str> = peer.ip().to_canonical().to_string().into();
    let limits = crate::h2::H2Limits::default();
    let drain = ctx.drain.clone();
    let handler_ctx = ctx.clone();
    let result = crate::h2::server::serve(io, &limits, drain, move |req, respond| {
        crate::proxy::h2_stream::handle(req, respond, handler_ctx.clone(), peer_ip.clone(), peer)
    })
    .await;
    match result {
        Err(crate::h2::H2Error::Panic(msg)) => {
            error!(%peer, panic = %msg, "HTTP/2 connection task panicked (contained); connection closed")
        }
        Err(e) => debug!(%peer, error = %e, "HTTP/2 connection ended with an error"),
        Ok(()) => {}
    }
}

async fn accept_loop(listener: TcpListener, ctx: Rc<WorkerCtx>, kind: Listener) {
    let _running = AcceptLoopGuard::new(&ctx.shared);
    let kind = Rc::new(kind);
    let mut cap_logged = false;
    let mut canceller = monoio::io::Canceller::new();
    loop {
        if ctx.stop_accept.is_fired() {
            return;
        }
        let cap = ctx
            .snapshots
            .get()
            .settings
            .limits
            .max_connections_per_worker;
        if ctx.active.get() >= cap {
            // Leave new connections in the kernel's backlog until one ends.
            if !cap_logged {
                warn!(
                    worker = ctx.id,
                    cap, "connection cap reached; pausing accept"
                );
                cap_logged = true;
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        cap_logged = false;
        // Cancelled, not dropped, on stop: an accept the kernel completed
        // meanwhile still yields its connection, which is then served.
        // (The socket may live on in an upgraded successor; a connection
        // taken off its queue and dropped here would be lost.)
        let accept = listener.cancelable_accept(canceller.handle());
        let mut accept = std::pin::pin!(accept);
        let mut stopped = false;
        let accepted = monoio::select! {
            r = &mut accept => r,
            _ = ctx.stop_accept.wait() => {
                canceller = canceller.cancel();
                stopped = true;
                accept.await
            }
        };
        if stopped && accepted.is_err() {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                ctx.active.set(ctx.active.get() + 1);
                ctx.obs.accepted(kind.observed_as());
                let guard = ActiveGuard(ctx.clone());
                let kind = kind.clone();
                monoio::spawn(async move {
                    let serve = Box::pin(connection(stream, peer, guard.0.clone(), kind));
                    if let Err(p) = CatchUnwind(serve).await {
                        error!(worker = guard.0.id, %peer, panic = panic_message(p.as_ref()), "connection task panicked (bug); connection closed");
                    }
                    drop(guard);
                });
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                warn!(worker = ctx.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Logs once which driver the workers run.
pub fn log_driver(kinds: &[DriverKind]) {
    let driver = if kinds.iter().all(|k| *k == DriverKind::IoUring) {
        "io_uring"
    } else if kinds.iter().all(|k| *k == DriverKind::Legacy) {
        "legacy"
    } else {
        "mixed"
    };
    info!(driver, workers = kinds.len(), "workers started");
}
