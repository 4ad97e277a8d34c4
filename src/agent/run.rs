//! `ringress http`: the agent process. One session per edge worker, each
//! on its own thread and monoio runtime (the edge says how many workers it
//! runs in AuthResp; a session that lands on a worker already served is
//! closed and redialled, so our traffic never crosses the edge's cores).
//! Sessions reconnect with capped exponential backoff and jitter, keeping
//! their URLs; SIGINT/SIGTERM unbind every endpoint and exit 0.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tracing::{info, warn};

use super::forward::{ForwardOptions, Forwarder};
use super::inspect::{self, TapConfig, WebOptions};
use super::session::{self, EndpointRequest, Resume, SessionError, SessionParams};
use super::status::Counters;
use crate::tunnel::registry::random_hex;

/// Reconnect backoff: from 500 ms, doubling, capped here, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Attempts at landing a session on a worker that has none yet.
const PLACEMENT_TRIES: usize = 16;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("cannot read root CAs {path}: {reason}")]
    RootCas { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Forward(String),
    #[error("{0}")]
    Session(String),
    #[error("cannot start: {0}")]
    Start(String),
    /// An agent config file that does not load.
    #[error("{0}")]
    Config(String),
}

/// One endpoint the agent serves.
#[derive(Debug, Clone)]
pub struct AgentEndpoint {
    /// `command_line` for `ringress http`, the config's name otherwise.
    pub name: String,
    /// Captured by the inspector (`--inspect`).
    pub inspect: bool,
    pub request: EndpointRequest,
    pub forward: ForwardOptions,
    /// Shown on the status screen.
    pub upstream_display: String,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server_addr: String,
    /// PEM file, or `host` for the system store; default: the dev CA of a
    /// local `--dev` edge when it exists.
    pub root_cas: Option<String>,
    pub authtoken: String,
    pub metadata: String,
    pub endpoints: Vec<AgentEndpoint>,
    /// Sessions to open; default: one per edge worker.
    pub sessions: Option<usize>,
    /// The local inspector and agent API.
    pub web: WebOptions,
}

/// The dev CA a local `--dev` edge writes.
pub fn dev_ca_path() -> PathBuf {
    crate::config::file::default_data_dir(true).join("ca.pem")
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, AgentError> {
    let err = |reason: String| AgentError::RootCas {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).map_err(|e| err(e.to_string()))?;
        n += 1;
    }
    if n == 0 {
        return Err(err("no CERTIFICATE in the file".into()));
    }
    Ok(roots)
}

/// The CERTIFICATE blocks of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

fn client_tls(root_cas: Option<&str>) -> Result<Arc<rustls::ClientConfig>, AgentError> {
    let roots = match root_cas {
        Some("host") | Some("trusted") => {
            super::forward::system_roots().map_err(|e| AgentError::RootCas {
                path: PathBuf::from("(system store)"),
                reason: e.to_string(),
            })?
        }
        Some(path) => load_roots(Path::new(path))?,
        None => {
            let dev = dev_ca_path();
            if dev.exists() {
                load_roots(&dev)?
            } else {
                super::forward::system_roots().map_err(|e| AgentError::RootCas {
                    path: PathBuf::from("(system store)"),
                    reason: e.to_string(),
                })?
            }
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Shared by the session threads.
struct Shared {
    cfg: AgentConfig,
    tls: Arc<rustls::ClientConfig>,
    group: String,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    /// Edge workers that have a session of ours.
    placed: Mutex<Vec<bool>>,
    /// URLs handed out by the first bind, for the other sessions.
    urls: Mutex<Vec<String>>,
    /// Per endpoint: the inspector's capture sink (None: not inspected).
    taps: Vec<Option<TapConfig>>,
    /// A refusal that retrying cannot fix, reported by any session.
    fatal: Mutex<Option<String>>,
    spawned_more: AtomicBool,
    /// Connections made, for the placement report.
    dials: std::sync::atomic::AtomicUsize,
    placement_reported: AtomicBool,
}

fn jitter(d: Duration) -> Duration {
    let r = u64::from_str_radix(&random_hex(2), 16).unwrap_or(0) as f64 / 65535.0;
    d.mul_f64(0.5 + r / 2.0)
}

/// Runs the agent until stopped. Returns an error for a refusal at start
/// (bad token, taken URL...).
pub fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let tls = client_tls(cfg.root_cas.as_deref())?;
    // Fail fast on bad upstream options, before connecting.
    for e in &cfg.endpoints {
        Forwarder::new(e.forward.clone()).map_err(|e| AgentError::Forward(e.to_string()))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| AgentError::Start(e.to_string()))?;
    }
    let counters = Arc::new(Counters::default());
    let taps = match inspect::start(&cfg.web, &cfg.endpoints, counters.clone()) {
        Some(r) => {
            counters.set_web(format!("http://{}", r.addr));
            r.taps
        }
        None => vec![None; cfg.endpoints.len()],
    };
    let shared = Arc::new(Shared {
        tls,
        taps,
        group: random_hex(8),
        stop: stop.clone(),
        counters,
        placed: Mutex::new(Vec::new()),
        urls: Mutex::new(vec![String::new(); cfg.endpoints.len()]),
        fatal: Mutex::new(None),
        spawned_more: AtomicBool::new(false),
        dials: std::sync::atomic::AtomicUsize::new(0),
        placement_reported: AtomicBool::new(false),
        cfg,
    });
    shared.counters.set_state("connecting");
    let threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
    spawn_session(shared.clone(), threads.clone(), 0)?;

    let tty = std::io::stdout().is_terminal();
    let mut shown_urls = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(if tty { 500 } else { 100 }));
        if let Some(msg) = shared.fatal.lock().ok().and_then(|f| f.clone()) {
            stop.store(true, Ordering::Release);
            join_all(&threads);
            return Err(AgentError::Session(msg));
        }
        let urls = shared.counters.urls();
        if tty {
            let _ = shared.counters.render(&mut std::io::stdout());
        } else if urls != shown_urls && !urls.is_empty() {
            for (url, upstream) in &urls {
                info!("forwarding {url} -> {upstream}");
                println!("{url}");
            }
        }
        shown_urls = urls;
        let all_done = threads
            .lock()
            .map(|t| !t.is_empty() && t.iter().all(|h| h.is_finished()))
            .unwrap_or(true);
        if all_done {
            break;
        }
    }
    join_all(&threads);
    info!("agent stopped");
    Ok(())
}

fn join_all(threads: &Mutex<Vec<std::thread::JoinHandle<()>>>) {
    let handles: Vec<_> = threads
        .lock()
        .map(|mut t| t.drain(..).collect())
        .unwrap_or_default();
    for h in handles {
        let _ = h.join();
    }
}

fn spawn_session(
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
    slot: usize,
) -> Result<(), AgentError> {
    let t2 = threads.clone();
    let h = std::thread::Builder::new()
        .name(format!("ringress-agent-{slot}"))
        .spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build();
            match rt {
                Ok(mut rt) => rt.block_on(session_loop(shared, t2, slot)),
                Err(e) => {
                    if let Ok(mut f) = shared.fatal.lock() {
                        *f = Some(format!("cannot build a runtime: {e}"));
                    }
                }
            }
        })
        .map_err(|e| AgentError::Start(e.to_string()))?;
    if let Ok(mut t) = threads.lock() {
        t.push(h);
    }
    Ok(())
}

async fn wait_stop(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        monoio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn session_loop(
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
    slot: usize,
) {
    let mut forwarders = Vec::with_capacity(shared.cfg.endpoints.len());
    for e in &shared.cfg.endpoints {
        match Forwarder::new(e.forward.clone()) {
            Ok(f) => forwarders.push(Rc::new(f)),
            Err(e) => {
                if let Ok(mut f) = shared.fatal.lock() {
                    *f = Some(e.to_string());
                }
                return;
            }
        }
    }
    let mut resume = Resume::default();
    let mut backoff = BACKOFF_MIN;
    let mut placement_tries = 0usize;
    let mut ever_connected = false;
    let mut my_worker: Option<usize> = None;
    while !shared.stop.load(Ordering::Acquire) {
        // Endpoints not bound by this session yet use the URL the first
        // bind got, so every session serves the same endpoint.
        let urls = shared.urls.lock().map(|u| u.clone()).unwrap_or_default();
        let endpoints: Vec<EndpointRequest> = shared
            .cfg
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut r = e.request.clone();
                if let Some(u) = urls.get(i).filter(|u| !u.is_empty()) {
                    r.url.clone_from(u);
                }
                r
            })
            .collect();
        let params = SessionParams {
            server_addr: shared.cfg.server_addr.clone(),
            tls: shared.tls.clone(),
            authtoken: shared.cfg.authtoken.clone(),
            metadata: shared.cfg.metadata.clone(),
            group: shared.group.clone(),
            endpoints,
            forwarders: forwarders.clone(),
            taps: shared.taps.clone(),
        };
        let tries = placement_tries;
        let place = |auth: &crate::tunnel::messages::AuthResp| {
            let n = auth.extra.ringress_workers.max(1);
            let w = auth.extra.ringress_worker;
            let Ok(mut placed) = shared.placed.lock() else {
                return true;
            };
            if placed.len() < n {
                placed.resize(n, false);
            }
            if my_worker == Some(w) || !placed.get(w).copied().unwrap_or(false) {
                return true;
            }
            // Taken: try again unless every worker is served or we tried
            // long enough (then a second session on one worker is fine).
            tries >= PLACEMENT_TRIES || placed.iter().all(|p| *p)
        };
        shared.dials.fetch_add(1, Ordering::Relaxed);
        match session::connect(&params, &resume, place).await {
            Ok(c) => {
                backoff = BACKOFF_MIN;
                placement_tries = 0;
                ever_connected = true;
                let w = c.auth.extra.ringress_worker;
                let n = c.auth.extra.ringress_workers.max(1);
                if let Ok(mut placed) = shared.placed.lock() {
                    if let Some(old) = my_worker.filter(|o| *o != w) {
                        if let Some(p) = placed.get_mut(old) {
                            *p = false;
                        }
                    }
                    if placed.len() < n {
                        placed.resize(n, false);
                    }
                    if let Some(p) = placed.get_mut(w) {
                        *p = true;
                    }
                    if placed.len() > 1
                        && placed.iter().all(|p| *p)
                        && !shared.placement_reported.swap(true, Ordering::AcqRel)
                    {
                        info!(
                            sessions = placed.len(),
                            connections = shared.dials.load(Ordering::Relaxed),
                            "one session on every edge worker"
                        );
                    }
                }
                my_worker = Some(w);
                resume = c.resume.clone();
                if slot == 0 {
                    if let Ok(mut u) = shared.urls.lock() {
                        for (i, b) in resume.bound.iter().enumerate() {
                            if let (Some(b), Some(slot)) = (b, u.get_mut(i)) {
                                *slot = session::without_port(&b.url);
                            }
                        }
                    }
                    let shown: Vec<(String, String)> = resume
                        .bound
                        .iter()
                        .zip(&shared.cfg.endpoints)
                        .filter_map(|(b, e)| {
                            b.as_ref()
                                .map(|b| (b.url.clone(), e.upstream_display.clone()))
                        })
                        .collect();
                    shared.counters.set_urls(shown);
                    let wanted = shared.cfg.sessions.unwrap_or(n).max(1);
                    if wanted > 1 && !shared.spawned_more.swap(true, Ordering::AcqRel) {
                        for s in 1..wanted {
                            if let Err(e) = spawn_session(shared.clone(), threads.clone(), s) {
                                warn!(error = %e, "cannot start another session");
                            }
                        }
                    }
                }
                shared.counters.session_up(n);
                shared.counters.set_state("online");
                info!(slot, edge_worker = w, "session online");
                let result = c
                    .serve(
                        &params,
                        shared.counters.clone(),
                        wait_stop(shared.stop.clone()),
                    )
                    .await;
                shared.counters.session_down();
                if shared.stop.load(Ordering::Acquire) {
                    break;
                }
                shared.counters.set_state("reconnecting");
                if let Err(e) = result {
                    warn!(slot, error = %e, "session lost; reconnecting");
                }
            }
            Err(SessionError::Misplaced(w)) => {
                placement_tries += 1;
                tracing::debug!(slot, edge_worker = w, "worker already served; redialling");
                continue;
            }
            Err(e) if e.is_permanent() && !ever_connected => {
                if let Ok(mut f) = shared.fatal.lock() {
                    *f = Some(e.to_string());
                }
                return;
            }
            Err(e) => {
                warn!(slot, error = %e, retry_in = ?backoff, "cannot connect to the edge");
                shared.counters.set_state("reconnecting");
            }
        }
        let pause = jitter(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        monoio::select! {
            _ = monoio::time::sleep(pause) => {}
            _ = wait_stop(shared.stop.clone()) => {}
        }
    }
}
