//! The edge process: loads the config, binds one SO_REUSEPORT listener per
//! worker, starts the pinned workers, then serves as the control thread:
//! SIGHUP reloads the config and publishes a new snapshot, SIGTERM/SIGINT
//! drain the workers and exit; SIGUSR2 (or `ringress edge --upgrade`)
//! hands the listening sockets to a new process (`upgrade`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use thiserror::Error;
use tracing::{error, info, warn};

use super::listeners::{ListenError, Listeners};
use super::snapshot::{Snapshot, SnapshotStore, TlsMaterial};
use super::upgrade::{self, CloseHooks, ControlRequest, ControlSocket, Predecessor, Restart};
use super::worker::{self, DriverKind, Shared, WorkerSpec};
use crate::config::{self, ConfigError, EdgeConfig};
use crate::control::api::{ApiAuth, ApiServer, KeyCheck, Mount, Routes};
use crate::control::plane::{CloudState, Plane, PlaneConfig, Publisher};
use crate::control::store::{store_path, RedbStore};
use crate::tls::acme::{AcmeHandle, AcmeSettings, Challenges, IssuedCert};
use crate::tls::local_ca::LocalCa;
use crate::tunnel::registry::{Registry, RegistryConfig};
use crate::tunnel::worker_tunnels::relay_channels;

#[derive(Debug, Error)]
pub enum EdgeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Upgrade(#[from] upgrade::UpgradeError),
    #[error("cannot start workers: {0}")]
    Workers(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    LocalCa(#[from] crate::tls::local_ca::LocalCaError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("ACME: {0}")]
    Acme(String),
    #[error("API: {0}")]
    Api(String),
}

/// What wakes the control thread.
enum ControlEvent {
    Signal(i32),
    /// A certificate loaded or issued by the ACME manager.
    Certificate(Box<IssuedCert>),
    /// The store's cloud state changed (an API write): publish it, then
    /// say whether the snapshot could be built.
    Cloud(Box<CloudState>, std::sync::mpsc::Sender<Result<(), String>>),
    /// `ringress edge --upgrade` on the control socket.
    Upgrade(ControlRequest),
}

/// Hands API changes to the control thread and waits for the verdict.
struct EdgePublisher {
    events: std::sync::Mutex<std::sync::mpsc::Sender<ControlEvent>>,
}

impl Publisher for EdgePublisher {
    fn apply(&self, state: CloudState) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(ControlEvent::Cloud(Box::new(state), tx))
            .map_err(|_| "the edge is stopping".to_owned())?;
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the control thread did not answer".to_owned())?
    }
}

/// Lets the API check keys against the plane.
struct PlaneKeys(Arc<Plane>);

impl KeyCheck for PlaneKeys {
    fn is_valid(&self, secret: &str) -> bool {
        self.0.key_is_valid(secret)
    }
}

/// How long start-up waits for a store another process still holds (an
/// upgrade's old process closes it first).
const STORE_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens the store and the plane when the API is enabled; under `--dev`
/// the first start prints a bootstrap API key once.
fn open_plane(cfg: &EdgeConfig) -> Result<Option<Arc<Plane>>, EdgeError> {
    if cfg.listen.api.is_none() {
        return Ok(None);
    }
    let path = store_path(&cfg.data_dir);
    let store = RedbStore::open_with_retry(&path, STORE_OPEN_TIMEOUT)
        .map_err(|e| EdgeError::Api(e.to_string()))?;
    restrict_mode(&path);
    let plane = Plane::new(
        Arc::new(store),
        PlaneConfig {
            dev: cfg.dev,
            base_domain: cfg.tunnel.base_domain.clone(),
            acme: cfg.tls.acme.is_some(),
        },
    )
    .map_err(|e| EdgeError::Api(e.to_string()))?;
    plane.set_config_urls(
        cfg.endpoints
            .iter()
            .map(|e| e.url.original.clone())
            .collect(),
    );
    if !plane.has_api_keys() {
        if cfg.dev {
            let (rec, token) = plane
                .create_api_key("bootstrap key (first --dev start)", "")
                .map_err(|e| EdgeError::Api(e.to_string()))?;
            info!(id = %rec.id, "created the bootstrap API key (shown once)");
            eprintln!("ringress: bootstrap API key (shown once, keep it): {token}");
        } else {
            warn!(
                "the API has no key yet: create one with `ringress api-key create --data-dir {}`",
                cfg.data_dir.display()
            );
        }
    }
    info!(path = %path.display(), "store open");
    Ok(Some(plane))
}

/// Endpoint id → URL for the observe routes: the API's ids (`ep_...`,
/// config endpoints' ids included) when the store is open.
fn endpoint_resolver(plane: &Option<Arc<Plane>>) -> crate::observe::api::Resolver {
    match plane {
        Some(plane) => {
            let plane = plane.clone();
            Arc::new(move |id: &str| plane.endpoint_url_by_id(id))
        }
        None => Arc::new(|_: &str| None),
    }
}

/// The store holds keys and token digests: owner-only.
fn restrict_mode(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        warn!(path = %path.display(), error = %e, "cannot make the store owner-only (it holds key and token digests)");
    }
}

/// Starts the ACME manager when the config asks for it.
fn start_acme(
    cfg: &EdgeConfig,
    challenges: &Arc<Challenges>,
    events: &std::sync::mpsc::Sender<ControlEvent>,
) -> Result<Option<AcmeHandle>, EdgeError> {
    let Some(acme) = &cfg.tls.acme else {
        return Ok(None);
    };
    let mut settings = AcmeSettings::new(acme.directory.clone(), cfg.data_dir.join("acme"));
    settings.ca_bundle = acme.ca_bundle.clone();
    settings.contact_email = acme.email.clone();
    let events = events.clone();
    let handle = AcmeHandle::spawn(
        settings,
        challenges.clone(),
        Box::new(move |cert| {
            let _ = events.send(ControlEvent::Certificate(Box::new(cert)));
        }),
    )
    .map_err(|e| EdgeError::Acme(e.to_string()))?;
    Ok(Some(handle))
}

fn sorted_domains(snapshot: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = snapshot.acme_domains.iter().cloned().collect();
    v.sort();
    v
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub workers: Option<usize>,
    pub listen_http: Option<SocketAddr>,
    pub listen_https: Option<SocketAddr>,
    pub listen_tunnel: Option<SocketAddr>,
    pub listen_api: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct EdgeOptions {
    pub config: Option<PathBuf>,
    /// Development mode (loopback defaults, local CA).
    pub dev: bool,
    pub overrides: Overrides,
    /// Validate the config and exit.
    pub check: bool,
    /// Ask the running edge to upgrade itself, wait for the outcome, exit.
    pub upgrade: bool,
    /// The running edge's control socket (default `<data_dir>/edge.sock`).
    pub upgrade_socket: Option<PathBuf>,
}

fn load(opts: &EdgeOptions) -> Result<EdgeConfig, ConfigError> {
    let mode = config::file::LoadMode { dev: opts.dev };
    let mut cfg = match &opts.config {
        Some(path) => config::load_file(path, mode)?,
        None => config::file::parse_str_with("", mode)?,
    };
    if let Some(w) = opts.overrides.workers {
        if w == 0 {
            return Err(ConfigError::Field {
                field: "--workers".into(),
                reason: "must be greater than zero".into(),
            });
        }
        cfg.workers = w;
    }
    if let Some(addr) = opts.overrides.listen_http {
        cfg.listen.http = addr;
    }
    if let Some(addr) = opts.overrides.listen_https {
        cfg.listen.https = Some(addr);
    }
    if let Some(addr) = opts.overrides.listen_tunnel {
        cfg.listen.tunnel = Some(addr);
        // Agents bind https endpoints by default: serve them.
        if cfg.listen.https.is_none() {
            let default = if opts.dev {
                config::file::DEV_HTTPS_LISTEN
            } else {
                config::file::DEFAULT_HTTPS_LISTEN
            };
            cfg.listen.https = default.parse().ok();
        }
    }
    if let Some(addr) = opts.overrides.listen_api {
        cfg.listen.api = Some(addr);
    }
    if let Some(dir) = &opts.overrides.data_dir {
        cfg.data_dir = dir.clone();
    }
    Ok(cfg)
}

/// Runs the edge until SIGTERM/SIGINT, or until an upgrade has handed it
/// over to a new process and it has drained. With `upgrade`, asks the
/// running edge to upgrade instead.
pub fn run(opts: EdgeOptions) -> Result<(), EdgeError> {
    if opts.upgrade {
        return request_upgrade(&opts);
    }
    let predecessor = match Predecessor::from_env() {
        Some(p) => Some(p?),
        None => None,
    };
    let result = serve(opts, predecessor.as_ref());
    if let (Err(e), Some(p)) = (&result, &predecessor) {
        p.fail(&e.to_string());
    }
    result
}

/// The API listener (reported before anything starts), through
/// `listeners` so that an upgrade hands it on.
fn bind_api(
    cfg: &EdgeConfig,
    listeners: &mut Listeners,
) -> Result<Option<std::net::TcpListener>, EdgeError> {
    let Some(addr) = cfg.listen.api else {
        return Ok(None);
    };
    Ok(Some(listeners.take_or_bind_one("api", addr)?))
}

/// The API listener's TLS config from `[api] tls_cert`/`tls_key`.
fn api_tls(cfg: &EdgeConfig) -> Result<Option<Arc<rustls::ServerConfig>>, EdgeError> {
    let Some((cert, key)) = &cfg.api.tls else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| EdgeError::Api(format!("cannot read {}: {e}", p.display())))
    };
    let key = crate::tls::certified_key_from_pem(&read(cert)?, &read(key)?)
        .map_err(|e| EdgeError::Api(format!("api TLS: {e}")))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(crate::control::api::server::OneCert(key)));
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Starts the API server with the edge's own routes and the other modules'
/// mounts.
fn start_api(
    listener: Option<std::net::TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    routes: impl FnOnce() -> (Arc<dyn Mount>, ApiAuth),
    mounts: Vec<Arc<dyn Mount>>,
) -> Result<Option<ApiServer>, EdgeError> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let (own, auth) = routes();
    ApiServer::start(
        listener,
        Routes {
            own,
            mounts,
            auth,
            tls,
        },
    )
    .map(Some)
    .map_err(|e| EdgeError::Api(e.to_string()))
}

/// `ringress edge --upgrade`: checks the config first (a broken one never
/// reaches the running edge), then asks the running edge to upgrade.
fn request_upgrade(opts: &EdgeOptions) -> Result<(), EdgeError> {
    let cfg = load(opts)?;
    let mut material = TlsMaterial::default();
    if cfg.dev {
        material.local_ca = Some(Arc::new(LocalCa::load_or_create(&cfg.data_dir)?));
    }
    Snapshot::build(&cfg, 1, &material)?;
    let socket = control_socket_path(opts, &cfg);
    let pid = upgrade::request(&socket, upgrade::REQUEST_TIMEOUT)?;
    info!(pid, "upgraded: the new edge serves");
    println!("upgraded: new pid {pid}");
    Ok(())
}

fn control_socket_path(opts: &EdgeOptions, cfg: &EdgeConfig) -> PathBuf {
    opts.upgrade_socket
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join(upgrade::SOCKET_NAME))
}

fn serve(opts: EdgeOptions, predecessor: Option<&Predecessor>) -> Result<(), EdgeError> {
    let cfg = load(&opts)?;
    let mut material = TlsMaterial::default();
    if cfg.dev {
        let ca = LocalCa::load_or_create(&cfg.data_dir)?;
        info!("dev CA: {} (curl --cacert {0})", ca.pem_path().display());
        material.local_ca = Some(Arc::new(ca));
    }
    let plane = if opts.check { None } else { open_plane(&cfg)? };
    if let Some(plane) = &plane {
        material.set_cloud(plane.cloud_state().map_err(EdgeError::Api)?);
    }
    let first = Snapshot::build(&cfg, 1, &material)?;
    if opts.check {
        info!(endpoints = cfg.endpoints.len(), "config is valid");
        return Ok(());
    }
    let restart = Restart::current();
    let (mut listeners, reservations) = match predecessor {
        Some(p) => p.hello(cfg.workers)?,
        None => (Listeners::new(), Vec::new()),
    };
    let (events_tx, events) = std::sync::mpsc::channel::<ControlEvent>();
    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2])
            .map_err(EdgeError::Signals)?;
    let signal_tx = events_tx.clone();
    std::thread::Builder::new()
        .name("ringress-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if signal_tx.send(ControlEvent::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| EdgeError::Workers(e.to_string()))?;

    // Every listener kind goes through `listeners`, so an upgrade hands it
    // on: one `take_or_bind` (per worker) or `take_or_bind_one` (control
    // plane) line per kind.
    let http_listeners = listeners.take_or_bind("http", cfg.listen.http, cfg.workers)?;
    let https_listeners = match cfg.listen.https {
        Some(addr) => Some(listeners.take_or_bind("https", addr, cfg.workers)?),
        None => None,
    };
    let tunnel_listeners = match cfg.listen.tunnel {
        Some(addr) => Some(listeners.take_or_bind("tunnel", addr, cfg.workers)?),
        None => None,
    };
    let api_listener = bind_api(&cfg, &mut listeners)?;
    let observe_listener = match cfg.observe.listen {
        Some(addr) => Some((addr, listeners.take_or_bind_one("observe", addr)?)),
        None => None,
    };
    for (kind, addr) in listeners.unclaimed() {
        warn!(%kind, %addr, "the running edge listens on an address this config no longer has; it closes when the old process stops");
    }
    let tunnel_addr = tunnel_listeners
        .as_deref()
        .zip(cfg.listen.tunnel)
        .map(|(l, a)| local_addr_of(l, a));
    let http_addr = local_addr_of(&http_listeners, cfg.listen.http);
    let https_addr = https_listeners
        .as_deref()
        .zip(cfg.listen.https)
        .map(|(l, a)| local_addr_of(l, a));
    let api_addr = api_listener.as_ref().and_then(|l| l.local_addr().ok());
    let api_tls = api_tls(&cfg)?;
    let challenges = Challenges::new();
    let registry = Arc::new(Registry::new(RegistryConfig {
        dev: cfg.dev,
        auth_tokens: cfg.tunnel.auth_tokens.clone(),
        base_domain: cfg.tunnel.base_domain.clone(),
        reserve_grace: cfg.tunnel.reserve_grace,
        workers: cfg.workers,
        http_port: http_addr.port(),
        https_port: https_addr.map(|a| a.port()),
        reserved_domains: cfg.tunnel.reserved_domains.clone(),
        cname_base: cfg.tunnel.cname_base.clone(),
    }));
    registry.import_reservations(&reservations);
    let (relays, relay_rxs) = relay_channels(cfg.workers);
    let store = Arc::new(SnapshotStore::new(first));
    registry.set_config_store(store.clone());
    if let Some(plane) = &plane {
        registry.set_token_check(plane.clone());
        plane.set_registry(registry.clone());
        plane.publish_domains();
        plane.set_publisher(Arc::new(EdgePublisher {
            events: std::sync::Mutex::new(events_tx.clone()),
        }));
    }
    let shared = Arc::new(Shared {
        store,
        stopping: AtomicBool::new(false),
        accepting: AtomicBool::new(true),
        accept_loops: std::sync::atomic::AtomicUsize::new(0),
        challenges,
        registry,
        relays,
    });
    let overrides = cfg
        .endpoints
        .iter()
        .any(|e| e.observe != crate::observe::EndpointObserve::default());
    let (observe_hub, worker_obs) = crate::observe::start(&cfg.observe, overrides, cfg.workers)
        .map_err(|e| EdgeError::Workers(format!("cannot start observability: {e}")))?;
    observe_hub.set_listeners(crate::observe::Listeners {
        http: Some(http_addr),
        https: https_addr,
    });
    let mut worker_obs = worker_obs.into_iter();
    let observe_addr = match observe_listener {
        Some((addr, listener)) => {
            let api = crate::observe::api::ObserveApi::new(
                observe_hub.clone(),
                endpoint_resolver(&plane),
            );
            Some(
                crate::observe::server::spawn(listener, api, cfg.observe.api_keys.clone())
                    .map_err(|source| EdgeError::Listen(ListenError::Bind { addr, source }))?,
            )
        }
        None => None,
    };
    let ticketer = crate::tls::server_config::ticketer()?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let grace = cfg.settings.timeouts.shutdown_grace;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(cfg.workers);
    let mut https_listeners = https_listeners.map(Vec::into_iter);
    let mut tunnel_listeners = tunnel_listeners.map(Vec::into_iter);
    let mut relay_rxs = relay_rxs.into_iter();
    for (id, http) in http_listeners.into_iter().enumerate() {
        let tunnel = match tunnel_listeners.as_mut().and_then(Iterator::next) {
            Some(l) => Some((
                l,
                crate::tls::server_config::tunnel_config(shared.store.clone(), ticketer.clone())?,
            )),
            None => None,
        };
        let https = match https_listeners.as_mut().and_then(Iterator::next) {
            Some(l) => Some((
                l,
                crate::tls::server_config::worker_config(
                    shared.store.clone(),
                    Some(shared.registry.clone()),
                    ticketer.clone(),
                    true,
                )?,
            )),
            None => None,
        };
        let spec = WorkerSpec {
            id,
            core: if cores.is_empty() {
                None
            } else {
                Some(cores[id % cores.len()])
            },
            http,
            https,
            tunnel,
            relay_rx: relay_rxs.next(),
            shared: shared.clone(),
            grace,
            obs: worker_obs
                .next()
                .unwrap_or_else(crate::observe::WorkerObs::disabled),
        };
        let tx = tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("ringress-w{id}"))
            .spawn(move || worker::run(spec, tx))
            .map_err(|e| EdgeError::Workers(e.to_string()))?;
        handles.push(handle);
    }
    drop(tx);
    let mut kinds: Vec<DriverKind> = Vec::with_capacity(handles.len());
    for _ in 0..handles.len() {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(kind)) => kinds.push(kind),
            Ok(Err(e)) => {
                shared.stopping.store(true, Ordering::Release);
                return Err(EdgeError::Workers(e));
            }
            Err(e) => {
                shared.stopping.store(true, Ordering::Release);
                return Err(EdgeError::Workers(format!("worker did not start: {e}")));
            }
        }
    }
    // Other modules add their routes here (observe: /metrics, captures).
    // Endpoint ids: the API's (ep_...), or a percent-encoded URL.
    let observe_api =
        crate::observe::api::ObserveApi::new(observe_hub.clone(), endpoint_resolver(&plane));
    let mounts: Vec<Arc<dyn Mount>> =
        vec![crate::observe::mount::ObserveMount::new(observe_api) as Arc<dyn Mount>];
    let api = start_api(
        api_listener,
        api_tls,
        || match &plane {
            Some(plane) => (
                Arc::new(crate::control::api::resources::Resources::new(
                    plane.clone(),
                    cfg.api.tls.is_some(),
                )) as Arc<dyn Mount>,
                ApiAuth::new(Arc::new(PlaneKeys(plane.clone()))),
            ),
            None => (
                Arc::new(crate::control::api::placeholder::NoRoutes) as Arc<dyn Mount>,
                ApiAuth::new(Arc::new(crate::control::api::placeholder::NoKeys)),
            ),
        },
        mounts,
    )?;
    // Shared with the upgrade's close hook, which stops it once the
    // successor serves the API on the same socket.
    let api = Arc::new(std::sync::Mutex::new(api));
    worker::log_driver(&kinds);
    // Accepting on the (inherited) sockets: the old process may stop,
    // close its control-plane resources and let us open ours.
    let mut upgraded_from = String::new();
    if let Some(p) = predecessor {
        match p.ready() {
            Ok(items) => shared.registry.import_reservations(&items),
            Err(e) => {
                shared.stopping.store(true, Ordering::Release);
                return Err(e.into());
            }
        }
        // Control-plane resources (the store) open here, with retry.
        upgraded_from = " upgraded=true".into();
    }
    // Shared with the upgrade's close hook: only one process may run the
    // ACME manager over the data dir's account and certificates.
    let acme = match start_acme(&cfg, &shared.challenges, &events_tx) {
        Ok(a) => a,
        // The predecessor has stopped accepting: serve on without ACME
        // rather than leave nobody serving.
        Err(e) if predecessor.is_some() => {
            error!("cannot start the ACME manager after the upgrade; serving without it: {e}");
            None
        }
        Err(e) => return Err(e),
    };
    let acme = Arc::new(std::sync::Mutex::new(acme));
    if let Some(acme) = &*lock(&acme) {
        acme.manage(sorted_domains(&shared.store.load()));
    }
    if let Some(p) = predecessor {
        p.opened();
    }
    let mut hooks = CloseHooks::new();
    {
        let acme = acme.clone();
        hooks.add(
            "ACME manager",
            Box::new(move || {
                if let Some(a) = lock(&acme).take() {
                    a.shutdown();
                }
            }),
        );
    }
    {
        let api = api.clone();
        hooks.add(
            "API server",
            Box::new(move || {
                if let Some(a) = lock(&api).take() {
                    a.stop();
                }
            }),
        );
    }
    let socket_path = control_socket_path(&opts, &cfg);
    let control_socket = {
        let tx = events_tx.clone();
        match ControlSocket::bind(
            &socket_path,
            Box::new(move |req| {
                let _ = tx.send(ControlEvent::Upgrade(req));
            }),
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(path = %socket_path.display(), error = %e, "no control socket: `ringress edge --upgrade` cannot reach this edge (SIGUSR2 still upgrades it)");
                None
            }
        }
    };
    let driver = kinds.first().map(|k| k.as_str()).unwrap_or("none");
    let https_field = https_addr
        .map(|a| format!(" https={a}"))
        .unwrap_or_default()
        + &tunnel_addr
            .map(|a| format!(" tunnel={a}"))
            .unwrap_or_default()
        + &observe_addr
            .map(|a| format!(" observe={a}"))
            .unwrap_or_default()
        + &api_addr.map(|a| format!(" api={a}")).unwrap_or_default();
    info!(
        "ringress edge ready http={http_addr}{https_field} workers={} driver={driver} endpoints={} pid={}{upgraded_from}",
        handles.len(),
        cfg.endpoints.len(),
        std::process::id(),
    );
    if predecessor.is_none() {
        super::notify::notify("READY=1");
    }

    let mut generation = 1;
    let mut running = cfg;
    let mut released = vec![false; handles.len()];
    let mut handed_over = false;
    loop {
        let event = match events.recv_timeout(Duration::from_millis(500)) {
            Ok(e) => e,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // A worker that ended (a panic) must not leave a duplicate
                // of its sockets open: the kernel would queue connections
                // on them for nobody.
                for (i, h) in handles.iter().enumerate() {
                    if h.is_finished() && !released[i] {
                        released[i] = true;
                        listeners.release_slot(i);
                        error!(worker = i, "worker ended; its listeners are closed");
                    }
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match event {
            ControlEvent::Signal(SIGHUP) => {
                generation += 1;
                match reload(&opts, &running, generation, &material) {
                    Ok((next_cfg, snapshot)) => {
                        if let Some(acme) = &*lock(&acme) {
                            acme.manage(sorted_domains(&snapshot));
                        }
                        shared.store.publish(snapshot);
                        if let Some(plane) = &plane {
                            plane.set_config_urls(
                                next_cfg
                                    .endpoints
                                    .iter()
                                    .map(|e| e.url.original.clone())
                                    .collect(),
                            );
                        }
                        info!(
                            generation,
                            endpoints = next_cfg.endpoints.len(),
                            "config reloaded"
                        );
                        running = next_cfg;
                    }
                    Err(e) => error!("reload rejected, keeping the running config: {e}"),
                }
            }
            ControlEvent::Signal(SIGUSR1) => match &*lock(&acme) {
                Some(acme) => {
                    let domains = sorted_domains(&shared.store.load());
                    info!(
                        count = domains.len(),
                        "renewing every ACME certificate now (SIGUSR1)"
                    );
                    for d in domains {
                        acme.renew_now(&d);
                    }
                }
                None => info!("SIGUSR1: no [acme] configured, nothing to renew"),
            },
            ControlEvent::Cloud(state, reply) => {
                let previous = std::mem::take(&mut material.cloud);
                let prev_uploaded = std::mem::take(&mut material.uploaded);
                let prev_acme = std::mem::take(&mut material.reserved_acme);
                material.set_cloud(*state);
                generation += 1;
                match Snapshot::build(&running, generation, &material) {
                    Ok(snapshot) => {
                        if let Some(acme) = &*lock(&acme) {
                            acme.manage(sorted_domains(&snapshot));
                        }
                        shared.store.publish(snapshot);
                        info!(generation, "cloud state published");
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        material.cloud = previous;
                        material.uploaded = prev_uploaded;
                        material.reserved_acme = prev_acme;
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            ControlEvent::Signal(SIGUSR2) => {
                if try_upgrade(
                    &restart,
                    &mut listeners,
                    &shared,
                    &mut hooks,
                    plane.as_deref(),
                )
                .is_ok()
                {
                    handed_over = true;
                    break;
                }
            }
            ControlEvent::Upgrade(req) => {
                let result = try_upgrade(
                    &restart,
                    &mut listeners,
                    &shared,
                    &mut hooks,
                    plane.as_deref(),
                );
                req.respond(&result);
                if result.is_ok() {
                    handed_over = true;
                    break;
                }
            }
            ControlEvent::Signal(signal) => {
                info!(signal, "stopping: draining connections (grace {:?})", grace);
                super::notify::notify("STOPPING=1");
                break;
            }
            ControlEvent::Certificate(cert) => {
                let key = match cert.certified_key() {
                    Ok(k) => Arc::new(k),
                    Err(e) => {
                        error!(domain = %cert.domain, "ACME certificate unusable: {e}");
                        continue;
                    }
                };
                material.acme.insert(cert.domain.clone(), key);
                generation += 1;
                match Snapshot::build(&running, generation, &material) {
                    Ok(snapshot) => {
                        shared.store.publish(snapshot);
                        info!(domain = %cert.domain, generation, "certificate installed");
                    }
                    Err(e) => error!(domain = %cert.domain, "cannot install certificate: {e}"),
                }
            }
        }
    }
    if handed_over {
        info!(
            "handed over to the new process: draining connections (grace {:?})",
            grace
        );
        // The successor owns the control socket's path now.
        if let Some(s) = control_socket {
            std::mem::forget(s);
        }
    } else {
        drop(control_socket);
    }
    listeners.release_all();
    shared.stopping.store(true, Ordering::Release);
    if let Some(api) = lock(&api).take() {
        api.stop();
    }
    let running_acme = lock(&acme).take();
    if let Some(acme) = running_acme {
        acme.shutdown();
    }
    if let Some(plane) = &plane {
        plane.store().close();
    }
    let deadline = Instant::now() + grace + Duration::from_secs(1);
    while handles.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stuck = handles.iter().filter(|h| !h.is_finished()).count();
    if stuck > 0 {
        warn!(
            stuck,
            "workers still busy after the grace period; exiting anyway"
        );
    } else {
        for h in handles {
            let _ = h.join();
        }
    }
    info!("stopped");
    Ok(())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands this edge over to a new process; `Ok` means it has taken over
/// and this one must drain, `Err` that this one keeps serving.
fn try_upgrade(
    restart: &Restart,
    listeners: &mut Listeners,
    shared: &Shared,
    hooks: &mut CloseHooks,
    plane: Option<&Plane>,
) -> Result<u32, String> {
    info!("upgrade requested: starting a new process");
    // The successor opens the store before it builds its first snapshot
    // (cloud endpoints route from its first request): release it now. API
    // calls answer 503 until the successor's API server takes over.
    if let Some(plane) = plane {
        plane.store().close();
    }
    let result = upgrade::hand_off(upgrade::HandOff {
        restart,
        listeners,
        registry: &shared.registry,
        shared,
        hooks,
    });
    match result {
        Ok(pid) => {
            info!(pid, "upgrade: the new process serves; draining this one");
            Ok(pid)
        }
        Err(e) => {
            if let Some(plane) = plane {
                if let Err(e) = plane.store().reopen() {
                    error!("cannot reopen the store after a failed upgrade (API writes fail until restart): {e}");
                }
            }
            error!("upgrade failed, this edge keeps serving: {e}");
            Err(e.to_string())
        }
    }
}

fn local_addr_of(listeners: &[std::net::TcpListener], configured: SocketAddr) -> SocketAddr {
    listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(configured)
}

fn reload(
    opts: &EdgeOptions,
    running: &EdgeConfig,
    generation: u64,
    material: &TlsMaterial,
) -> Result<(EdgeConfig, Snapshot), ConfigError> {
    let mut next = load(opts)?;
    if next.tunnel != running.tunnel {
        warn!("[tunnel] (auth tokens, base domain, reserve grace) changes only on restart; keeping the running one");
        next.tunnel = running.tunnel.clone();
    }
    if next.workers != running.workers
        || next.listen != running.listen
        || next.data_dir != running.data_dir
    {
        warn!("workers, listen addresses and the data dir change only on restart; keeping the running ones");
        next.workers = running.workers;
        next.listen = running.listen.clone();
        next.data_dir = running.data_dir.clone();
    }
    let snapshot = Snapshot::build(&next, generation, material)?;
    Ok((next, snapshot))
}
