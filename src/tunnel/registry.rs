//! The registry of agent sessions and their bound endpoints: the
//! authoritative state behind the tunnel table.
//!
//! Auth, Bind, Unbind and session ends are control operations: they take a
//! short lock here (a few hash map operations, no I/O) and publish a new
//! immutable [`TunnelTable`]. The request path never takes the lock: it
//! reads the table through a per-worker cache checked by generation, like
//! the config snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing::{debug, info};

use super::messages::{
    self, ngrok_error, Auth, AuthResp, AuthRespExtra, Bind, BindResp, BindRespExtra, ErrorResp,
    HttpOpts,
};
use crate::control::domains::{
    check_cloud_endpoint, DomainPolicy, HostSource, Ownership, ReservedDomains,
};
use crate::control::url_rules::{
    self, parse_bindings, validate_url, EdgeUrls, EndpointUrl, Origin, UrlError,
};
use crate::policy::{legacy, CompiledPolicy, TrafficPolicy};
use crate::route::{normalize_host, Binding, Endpoint, Member, RouteTable, Scheme, TunnelTarget};

pub type SessionId = u64;

/// What the registry needs to know about the edge.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Any auth token is accepted (and none is required) under `--dev`.
    pub dev: bool,
    pub auth_tokens: Vec<String>,
    /// Random hostnames are `<12 hex>.<base_domain>`; without one, an agent
    /// must name its host.
    pub base_domain: Option<String>,
    /// How long a dropped session's URLs stay reserved for its reconnect.
    pub reserve_grace: Duration,
    pub workers: usize,
    /// Public listener ports, for the URLs handed to agents.
    pub http_port: u16,
    pub https_port: Option<u16>,
    /// Domains agents may bind in production besides random names
    /// (`[tunnel] reserved_domains`); the API's are added at run time.
    pub reserved_domains: ReservedDomains,
    /// Zone of reserved domains' CNAME targets.
    pub cname_base: Option<String>,
}

/// A Bind's URL after the shared rules, and how its host was named.
#[derive(Debug, Clone)]
pub struct BindUrl {
    pub url: EndpointUrl,
    pub source: HostSource,
}

/// The published view: agent endpoints by scheme, like the config routes.
#[derive(Debug, Default)]
pub struct TunnelTable {
    pub generation: u64,
    pub http: RouteTable,
    pub https: RouteTable,
    /// Hosts handed over by the process this one upgraded, whose agents
    /// have not re-bound yet, with the time to stop waiting for them.
    pub awaiting: HashMap<(Scheme, String), Instant>,
}

impl TunnelTable {
    pub fn routes(&self, scheme: Scheme) -> &RouteTable {
        match scheme {
            Scheme::Http => &self.http,
            Scheme::Https => &self.https,
        }
    }
}

#[derive(Debug)]
struct SessionRec {
    worker: usize,
    client_id: String,
    /// Sessions of one agent share a group: their binds of one URL count as
    /// one binder.
    group: String,
    authed: bool,
    /// Set by the owning worker while requests wait for a stream slot;
    /// read by other workers, which then return their idle relayed
    /// connections to this session instead of keeping them.
    pressure: Arc<std::sync::atomic::AtomicBool>,
    /// The API credential the session authenticated with, if any.
    credential: Option<String>,
    /// Its credential was revoked: the session's watchdog closes it.
    revoked: bool,
    started: std::time::SystemTime,
    os: String,
    agent_version: String,
    metadata: String,
}

/// Checks agent authtokens created through the API (`control`'s
/// credentials): the credential id for a valid token.
pub trait TokenCheck: Send + Sync + 'static {
    fn credential_for(&self, token: &str) -> Option<String>;
    /// The credential's ACL (`bind:HOST` / `bind:*.DOMAIN` rules; empty:
    /// any host the edge lets it bind). `None` once it is gone.
    fn acl_for(&self, _credential: &str) -> Option<Arc<Vec<String>>> {
        None
    }
    /// True when at least one credential exists (then a `--dev` edge with
    /// no file tokens still accepts any token).
    fn is_empty(&self) -> bool;
}

/// A live agent session, as the API lists it (`/tunnel_sessions`).
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: SessionId,
    pub client_id: String,
    pub worker: usize,
    pub credential: Option<String>,
    pub started: std::time::SystemTime,
    pub os: String,
    pub agent_version: String,
    pub metadata: String,
}

/// An online agent endpoint, as the API lists it.
#[derive(Debug, Clone)]
pub struct TunnelInfo {
    pub id: String,
    pub url: String,
    pub session: SessionId,
    pub client_id: String,
}

#[derive(Debug, Clone)]
struct TunnelRec {
    session: SessionId,
    group: String,
    scheme: Scheme,
    host: String,
    url: String,
    pooling: bool,
    token: String,
    policy: Option<Arc<CompiledPolicy>>,
}

#[derive(Debug, Default)]
struct HostRec {
    tunnels: Vec<String>,
    /// Kept for a reconnecting agent: its bind token and the deadline.
    reserved: Option<(String, Instant)>,
    /// The reservation came with an upgrade hand-off: the agent is
    /// reconnecting from the old process right now, so requests for the
    /// host wait for it (see `TunnelTable::awaiting`).
    handoff: bool,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionId, SessionRec>,
    tunnels: HashMap<String, TunnelRec>,
    hosts: HashMap<(Scheme, String), HostRec>,
    /// Cookies handed out, by client id (echoed on reconnect).
    cookies: HashMap<String, String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

pub struct Registry {
    cfg: RegistryConfig,
    /// The config's endpoints: an agent may not bind a host the config
    /// serves exactly (it would never get a request).
    config: std::sync::OnceLock<Arc<crate::runtime::snapshot::SnapshotStore>>,
    /// API credentials, checked at Auth beside `auth_tokens`.
    tokens: std::sync::OnceLock<Arc<dyn TokenCheck>>,
    state: Mutex<State>,
    table: ArcSwap<TunnelTable>,
    generation: AtomicU64,
    next_session: AtomicU64,
    /// Reserved domains Bind consults (config's plus the API's), published
    /// whole; read at Bind only.
    domains: ArcSwap<ReservedDomains>,
}

/// Random lowercase hex from the TLS provider's CSPRNG.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let rng = rustls::crypto::aws_lc_rs::default_provider().secure_random;
    if rng.fill(&mut buf).is_err() {
        // Never expected; fall back on the clock so ids stay unique.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8;
        }
    }
    let mut s = String::with_capacity(bytes * 2);
    for b in buf {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a bind was refused, in ngrok's error form.
fn bind_error(message: &str, code: u32) -> BindResp {
    BindResp {
        error: ngrok_error(message, code),
        ..BindResp::default()
    }
}

impl Registry {
    pub fn new(cfg: RegistryConfig) -> Registry {
        Registry {
            config: std::sync::OnceLock::new(),
            tokens: std::sync::OnceLock::new(),
            state: Mutex::new(State::default()),
            table: ArcSwap::from_pointee(TunnelTable::default()),
            generation: AtomicU64::new(0),
            next_session: AtomicU64::new(1),
            domains: ArcSwap::from_pointee(cfg.reserved_domains.clone()),
            cfg,
        }
    }

    /// Publishes the reserved domains of the store (the REST API's); Bind
    /// sees them together with the config's from the next Bind on.
    pub fn set_api_reserved_domains(&self, api: &ReservedDomains) {
        self.domains
            .store(Arc::new(self.cfg.reserved_domains.union(api)));
    }

    /// The reserved domains Bind consults now.
    pub fn reserved_domains(&self) -> Arc<ReservedDomains> {
        self.domains.load_full()
    }

    /// The edge's facts for URL checks: listener ports that count as 80
    /// and 443, the base domain, the public-suffix rule in production.
    pub fn edge_urls(&self) -> EdgeUrls {
        EdgeUrls {
            http_port: self.cfg.http_port,
            https_port: self.cfg.https_port,
            base_domains: self.cfg.base_domain.iter().cloned().collect(),
            public_suffix_rule: !self.cfg.dev,
            serves_tcp_tls: false,
        }
    }

    /// The rules for new reserved domains (the API's `/reserved_domains`).
    pub fn domain_policy(&self) -> DomainPolicy {
        DomainPolicy {
            base_domains: self.cfg.base_domain.iter().cloned().collect(),
            cname_base: self.cfg.cname_base.clone(),
            public_suffix_rule: !self.cfg.dev,
        }
    }

    /// Checks a cloud endpoint's URL for the API: the shared rules with
    /// origin `Cloud`, then domain ownership as at Bind (see
    /// [`check_cloud_endpoint`]).
    pub fn check_cloud_url(&self, url: &str, bindings: &[String]) -> Result<EndpointUrl, UrlError> {
        let reserved = self.domains.load();
        let bases: Vec<String> = self.cfg.base_domain.iter().cloned().collect();
        let own = Ownership {
            dev: self.cfg.dev,
            base_domains: &bases,
            reserved: &reserved,
        };
        check_cloud_endpoint(url, bindings, &self.edge_urls(), &own)
    }

    /// Domain ownership for a public host (production: random names,
    /// reserved domains; `--dev`: anything), with the public-suffix rule
    /// for hosts no reservation covers.
    fn authorize_host(
        &self,
        host: &str,
        source: HostSource,
        edge: &EdgeUrls,
    ) -> Result<(), UrlError> {
        let reserved = self.domains.load();
        let bases: Vec<String> = self.cfg.base_domain.iter().cloned().collect();
        let own = Ownership {
            dev: self.cfg.dev,
            base_domains: &bases,
            reserved: &reserved,
        };
        own.authorize_public(host, source, edge)
    }

    /// The URL a Bind asks for: `Opts.URL`, else `Domain`, `Hostname`,
    /// `Subdomain` + base domain, else a random name; checked with the
    /// shared URL rules (origin `Agent`), then for ownership.
    pub fn bind_url(&self, bind: &Bind, opts: &HttpOpts) -> Result<BindUrl, UrlError> {
        let proto = match bind.proto.as_str() {
            "" => "",
            "https" => "https",
            "http" => "http",
            other => {
                return Err(UrlError::new(
                    9036,
                    format!("Invalid scheme `{other}`, allowed schemes: `http, https`."),
                ))
            }
        };
        let with_proto = |host: &str| {
            if proto.is_empty() || host.contains("://") {
                host.to_owned()
            } else {
                format!("{proto}://{host}")
            }
        };
        let (input, source) = if !opts.url.is_empty() {
            (with_proto(&opts.url), HostSource::Named)
        } else if !opts.domain.is_empty() {
            (with_proto(&opts.domain), HostSource::Named)
        } else if !opts.hostname.is_empty() {
            (with_proto(&opts.hostname), HostSource::Named)
        } else if !opts.subdomain.is_empty() {
            match &self.cfg.base_domain {
                Some(base) => (
                    with_proto(&format!("{}.{base}", opts.subdomain)),
                    HostSource::Subdomain,
                ),
                None => {
                    return Err(UrlError::new(
                        313,
                        "This edge has no base domain for subdomains.",
                    ))
                }
            }
        } else {
            (with_proto(""), HostSource::Random)
        };
        let binding = parse_bindings(&bind.extra.bindings)?;
        let edge = EdgeUrls {
            // Ownership decides below; the suffix rule waits for it.
            public_suffix_rule: false,
            ..self.edge_urls()
        };
        let url = validate_url(&input, binding, Origin::Agent, &edge)?;
        let source = if url.host.is_none() {
            HostSource::Random
        } else {
            source
        };
        if let (Some(host), url_rules::Binding::Public) = (&url.host, url.binding) {
            self.authorize_host(host, source, &self.edge_urls())?;
        }
        Ok(BindUrl { url, source })
    }

    /// Lets Bind see the config's endpoints (set once at start).
    pub fn set_config_store(&self, store: Arc<crate::runtime::snapshot::SnapshotStore>) {
        let _ = self.config.set(store);
    }

    /// Lets Auth accept the API's credentials (set once at start).
    pub fn set_token_check(&self, check: Arc<dyn TokenCheck>) {
        let _ = self.tokens.set(check);
    }

    /// Marks every session of this credential revoked (their watchdogs
    /// close them within a second); returns how many.
    pub fn revoke_credential(&self, credential: &str) -> usize {
        let mut st = self.lock();
        let mut n = 0;
        for s in st.sessions.values_mut() {
            if s.credential.as_deref() == Some(credential) {
                s.revoked = true;
                n += 1;
            }
        }
        n
    }

    /// True once the session's credential was revoked.
    pub fn is_revoked(&self, session: SessionId) -> bool {
        self.lock()
            .sessions
            .get(&session)
            .is_some_and(|s| s.revoked)
    }

    /// The authenticated sessions.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let st = self.lock();
        st.sessions
            .iter()
            .filter(|(_, s)| s.authed)
            .map(|(id, s)| SessionInfo {
                id: *id,
                client_id: s.client_id.clone(),
                worker: s.worker,
                credential: s.credential.clone(),
                started: s.started,
                os: s.os.clone(),
                agent_version: s.agent_version.clone(),
                metadata: s.metadata.clone(),
            })
            .collect()
    }

    /// The online agent endpoints.
    pub fn tunnels(&self) -> Vec<TunnelInfo> {
        let st = self.lock();
        st.tunnels
            .iter()
            .filter(|(_, t)| t.session != 0)
            .map(|(id, t)| TunnelInfo {
                id: id.clone(),
                url: t.url.clone(),
                session: t.session,
                client_id: st
                    .sessions
                    .get(&t.session)
                    .map(|s| s.client_id.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// The current table (lock-free).
    pub fn table(&self) -> Arc<TunnelTable> {
        self.table.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn new_session(&self, worker: usize) -> SessionId {
        self.new_session_with_pressure(worker).0
    }

    /// A new session and its slot-pressure flag (see `SessionRec`).
    pub fn new_session_with_pressure(
        &self,
        worker: usize,
    ) -> (SessionId, Arc<std::sync::atomic::AtomicBool>) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let pressure = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.lock().sessions.insert(
            id,
            SessionRec {
                worker,
                client_id: String::new(),
                group: format!("s{id}"),
                authed: false,
                pressure: pressure.clone(),
                credential: None,
                revoked: false,
                started: std::time::SystemTime::now(),
                os: String::new(),
                agent_version: String::new(),
                metadata: String::new(),
            },
        );
        (id, pressure)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind: still
        // consistent enough to keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_authed(&self, session: SessionId) -> bool {
        self.lock().sessions.get(&session).is_some_and(|s| s.authed)
    }

    /// Checks the token and answers Auth. `Err` carries the error text the
    /// agent shows (the session is then closed).
    pub fn auth(&self, session: SessionId, auth: &Auth) -> Result<AuthResp, String> {
        let token = auth.extra.auth_token.as_bytes();
        let api = self.tokens.get();
        let credential = api.and_then(|c| c.credential_for(&auth.extra.auth_token));
        let api_empty = api.is_none_or(|c| c.is_empty());
        let ok = credential.is_some()
            || if self.cfg.auth_tokens.is_empty() {
                self.cfg.dev && api_empty
            } else {
                self.cfg
                    .auth_tokens
                    .iter()
                    .any(|t| ct_eq(t.as_bytes(), token))
            };
        if !ok {
            let msg = if token.is_empty() {
                "An authtoken is required to start a session on this edge."
            } else {
                "The authtoken you specified is invalid."
            };
            return Err(ngrok_error(msg, 107));
        }
        let mut st = self.lock();
        let client_id = if auth.client_id.is_empty() {
            random_hex(16)
        } else {
            auth.client_id.clone()
        };
        let cookie = st
            .cookies
            .entry(client_id.clone())
            .or_insert_with(|| {
                if auth.extra.cookie.is_empty() {
                    random_hex(16)
                } else {
                    auth.extra.cookie.clone()
                }
            })
            .clone();
        let worker = match st.sessions.get_mut(&session) {
            Some(rec) => {
                rec.authed = true;
                rec.client_id = client_id.clone();
                rec.credential = credential;
                rec.os.clone_from(&auth.extra.os);
                rec.agent_version.clone_from(&auth.extra.version);
                rec.metadata.clone_from(&auth.extra.metadata);
                if !auth.extra.ringress_group.is_empty() {
                    rec.group = format!("g:{}", auth.extra.ringress_group);
                }
                rec.worker
            }
            None => return Err(ngrok_error("The session is closed.", 4018)),
        };
        info!(
            session,
            worker,
            client = %auth.extra.client_type,
            agent = %auth.extra.user_agent,
            "agent session authenticated"
        );
        Ok(AuthResp {
            version: "3".into(),
            client_id: client_id.clone(),
            error: String::new(),
            extra: AuthRespExtra {
                version: env!("CARGO_PKG_VERSION").into(),
                region: "local".into(),
                cookie,
                agent_session_id: client_id,
                ringress_workers: self.cfg.workers,
                ringress_worker: worker,
                ..AuthRespExtra::default()
            },
        })
    }

    /// Answers Bind: picks the host, checks conflicts, records the tunnel
    /// and publishes the table. Failures come back in `Error`.
    pub fn bind(&self, session: SessionId, bind: &Bind) -> BindResp {
        let opts: HttpOpts = match messages::decode(bind.opts.clone()) {
            Ok(o) => o,
            Err(e) => return bind_error(&format!("Invalid endpoint options: {e}"), 9034),
        };
        let url = match self.bind_url(bind, &opts) {
            Ok(u) => u,
            Err(e) => return bind_error(&e.message, e.code),
        };
        let Some(scheme) = url.url.scheme.route() else {
            return bind_error("This edge serves http and https endpoints.", 9036);
        };
        let policy = match compile_bind_policy(&bind.opts, &opts) {
            Ok(p) => p.map(Arc::new),
            Err(msg) => return bind_error(&msg, 9026),
        };

        let mut st = self.lock();
        let Some(sess) = st.sessions.get(&session) else {
            return bind_error("The session is closed.", 4018);
        };
        if !sess.authed {
            return bind_error("The session is not authenticated.", 4018);
        }
        let group = sess.group.clone();
        let credential = sess.credential.clone();
        let host =
            match url.url.host.clone() {
                Some(h) => h,
                None => match &self.cfg.base_domain {
                    Some(base) => loop {
                        let h = format!("{}.{base}", random_hex(6));
                        if !st.hosts.contains_key(&(scheme, h.clone())) {
                            break h;
                        }
                    },
                    None => return bind_error(
                        "This edge has no base domain for random hostnames: pass a URL or domain.",
                        9028,
                    ),
                },
            };
        let url = url.url.display(&host, &self.edge_urls());
        if let (Some(cred), Some(check)) = (&credential, self.tokens.get()) {
            if let Some(acl) = check.acl_for(cred) {
                if !acl_allows(&acl, &host) {
                    return bind_error(
                        &format!(
                            "Your authtoken's ACL does not allow binding '{url}'. Its rules: {}.",
                            acl.join(", ")
                        ),
                        9017,
                    );
                }
            }
        }
        if let Some(store) = self.config.get() {
            let snap = store.load();
            let routes = match scheme {
                Scheme::Http => &snap.http_routes,
                Scheme::Https => &snap.https_routes,
            };
            if routes.has_exact(&host) {
                return bind_error(
                    &format!("The endpoint '{url}' is served by the edge's configuration."),
                    334,
                );
            }
        }

        // A reconnecting agent re-sends its old id and token.
        let id = if bind.id.is_empty() {
            format!("tn_{}", random_hex(12))
        } else {
            bind.id.clone()
        };
        if let Some(old) = st.tunnels.get(&id) {
            let live = st.sessions.contains_key(&old.session) && old.session != session;
            if live && !ct_eq(old.token.as_bytes(), bind.extra.token.as_bytes()) {
                return bind_error("This tunnel id belongs to another session.", 6025);
            }
            remove_tunnel(&mut st, &id);
        }
        let key = (scheme, host.clone());
        let now = Instant::now();
        let pooling = bind.extra.pooling_enabled;
        {
            let rec = st.hosts.entry(key.clone()).or_default();
            if let Some((token, until)) = &rec.reserved {
                if *until <= now || ct_eq(token.as_bytes(), bind.extra.token.as_bytes()) {
                    rec.reserved = None;
                }
            }
        }
        let (others, reserved) = {
            let rec = &st.hosts[&key];
            let others: Vec<&TunnelRec> = rec
                .tunnels
                .iter()
                .filter_map(|t| st.tunnels.get(t))
                .filter(|t| t.group != group)
                .collect();
            let all_pool = pooling && others.iter().all(|t| t.pooling);
            (
                if others.is_empty() || all_pool {
                    None
                } else {
                    Some(others.iter().any(|t| t.pooling) || pooling)
                },
                rec.reserved.is_some() && others.is_empty(),
            )
        };
        if let Some(mixed) = others {
            let msg = if mixed {
                format!("The endpoint '{url}' is already online, and not every agent bound it with pooling enabled.")
            } else {
                format!("The endpoint '{url}' is already online. Either stop the other agent or start both with --pooling-enabled.")
            };
            return bind_error(&msg, 334);
        }
        if reserved {
            return bind_error(
                &format!("The endpoint '{url}' is reserved for a reconnecting agent for a moment; try again shortly."),
                334,
            );
        }
        let token = if bind.extra.token.is_empty() {
            random_hex(16)
        } else {
            bind.extra.token.clone()
        };
        st.tunnels.insert(
            id.clone(),
            TunnelRec {
                session,
                group,
                scheme,
                host: host.clone(),
                url: url.clone(),
                pooling,
                token: token.clone(),
                policy,
            },
        );
        if let Some(rec) = st.hosts.get_mut(&key) {
            rec.tunnels.push(id.clone());
        }
        self.publish(&st);
        drop(st);
        info!(session, tunnel = %id, %url, "endpoint online");
        let mut opts_echo = bind.opts.clone();
        if let Some(o) = opts_echo.as_object_mut() {
            // The Rust SDK decodes these as required strings/ints.
            for (k, default) in [
                ("Hostname", serde_json::Value::String(String::new())),
                ("Auth", serde_json::Value::String(String::new())),
                ("Subdomain", serde_json::Value::String(String::new())),
                ("HostHeaderRewrite", serde_json::Value::Bool(false)),
                ("ProxyProto", serde_json::Value::from(0)),
            ] {
                let present = o.keys().any(|x| x.eq_ignore_ascii_case(k));
                if !present {
                    o.insert(k.to_owned(), default);
                }
            }
        }
        BindResp {
            id: id.clone(),
            url,
            proto: scheme.as_str().to_owned(),
            opts: opts_echo,
            extra: BindRespExtra {
                token,
                tunnel_id: id,
            },
            error: String::new(),
        }
    }

    /// Answers Unbind; unknown ids are fine (the SDKs unbind twice).
    pub fn unbind(&self, session: SessionId, id: &str) -> ErrorResp {
        let mut st = self.lock();
        if st.tunnels.get(id).is_some_and(|t| t.session == session) {
            let url = st
                .tunnels
                .get(id)
                .map(|t| t.url.clone())
                .unwrap_or_default();
            remove_tunnel(&mut st, id);
            self.publish(&st);
            info!(session, tunnel = id, %url, "endpoint offline (unbind)");
        }
        ErrorResp::default()
    }

    /// A session ended: its endpoints go offline at once, and their hosts
    /// stay reserved for the grace period so the agent can reconnect.
    pub fn session_gone(&self, session: SessionId) {
        let mut st = self.lock();
        st.sessions.remove(&session);
        let ids: Vec<String> = st
            .tunnels
            .iter()
            .filter(|(_, t)| t.session == session)
            .map(|(id, _)| id.clone())
            .collect();
        let until = Instant::now() + self.cfg.reserve_grace;
        for id in &ids {
            if let Some(t) = st.tunnels.remove(id) {
                let key = (t.scheme, t.host.clone());
                if let Some(rec) = st.hosts.get_mut(&key) {
                    rec.tunnels.retain(|x| x != id);
                    if rec.tunnels.is_empty() && !self.cfg.reserve_grace.is_zero() {
                        rec.reserved = Some((t.token.clone(), until));
                    }
                }
                // Keep the tunnel id known, so a reconnect presenting it
                // with its token is recognised.
                st.tunnels.insert(id.clone(), TunnelRec { session: 0, ..t });
            }
        }
        // Ended sessions leave their tunnel records only as reservations:
        // drop those whose grace has passed.
        let now = Instant::now();
        st.hosts.retain(|_, rec| {
            if let Some((_, until)) = &rec.reserved {
                if *until <= now {
                    rec.reserved = None;
                }
            }
            !rec.tunnels.is_empty() || rec.reserved.is_some()
        });
        let live: std::collections::HashSet<(Scheme, String)> = st.hosts.keys().cloned().collect();
        st.tunnels
            .retain(|_, t| t.session != 0 || live.contains(&(t.scheme, t.host.clone())));
        self.publish(&st);
        debug!(session, endpoints = ids.len(), "agent session gone");
    }

    /// Rebuilds and publishes the table from the state (under the lock).
    fn publish(&self, st: &State) {
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let mut table = TunnelTable {
            generation,
            ..TunnelTable::default()
        };
        for ((scheme, host), rec) in &st.hosts {
            let mut members: Vec<(String, Member)> = Vec::new();
            let mut policy = None;
            let mut url = String::new();
            for id in &rec.tunnels {
                let Some(t) = st.tunnels.get(id) else {
                    continue;
                };
                let Some(s) = st.sessions.get(&t.session) else {
                    continue;
                };
                if policy.is_none() {
                    policy = t.policy.clone();
                }
                url.clone_from(&t.url);
                let binding = Binding {
                    worker: s.worker,
                    session: t.session,
                    tunnel_id: Arc::from(id.as_str()),
                    proto: scheme.as_str(),
                    pressure: s.pressure.clone(),
                };
                match members.iter_mut().find(|(g, _)| *g == t.group) {
                    Some((_, m)) => m.sessions.push(binding),
                    None => members.push((
                        t.group.clone(),
                        Member {
                            sessions: vec![binding],
                        },
                    )),
                }
            }
            if members.is_empty() {
                if let (true, Some((_, until))) = (rec.handoff, &rec.reserved) {
                    table.awaiting.insert((*scheme, host.clone()), *until);
                }
                continue;
            }
            let endpoint = Arc::new(Endpoint {
                url,
                scheme: *scheme,
                host: host.clone(),
                upstream: None,
                policy,
                tunnel: Some(TunnelTarget {
                    members: members.into_iter().map(|(_, m)| m).collect(),
                }),
                observe: Default::default(),
            });
            let routes = match scheme {
                Scheme::Http => &mut table.http,
                Scheme::Https => &mut table.https,
            };
            routes.insert(endpoint);
        }
        self.table.store(Arc::new(table));
        self.generation.store(generation, Ordering::Release);
    }
}

/// An agent URL handed from one edge process to its successor during an
/// upgrade: the host stays reserved for the agent that held it (it
/// re-binds with its tunnel token) for `remaining_ms`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reservation {
    /// `http` or `https`.
    pub scheme: String,
    pub host: String,
    pub token: String,
    pub remaining_ms: u64,
}

/// How long a handed-over URL stays reserved at least, whatever
/// `reserve_grace` says: the agents are reconnecting right now.
const HANDOFF_RESERVE_MIN: Duration = Duration::from_secs(10);

impl Registry {
    /// Every host online or reserved here, as reservations for the
    /// successor of an upgrade.
    pub fn export_reservations(&self) -> Vec<Reservation> {
        let st = self.lock();
        let now = Instant::now();
        let live_for = self.cfg.reserve_grace.max(HANDOFF_RESERVE_MIN);
        let mut out = Vec::new();
        for ((scheme, host), rec) in &st.hosts {
            let live = rec
                .tunnels
                .iter()
                .filter_map(|id| st.tunnels.get(id))
                .find(|t| t.session != 0);
            let (token, remaining) = match (live, &rec.reserved) {
                (Some(t), _) => (t.token.clone(), live_for),
                (None, Some((token, until))) if *until > now => {
                    (token.clone(), (*until - now).max(HANDOFF_RESERVE_MIN))
                }
                _ => continue,
            };
            out.push(Reservation {
                scheme: scheme.as_str().to_owned(),
                host: host.clone(),
                token,
                remaining_ms: remaining.as_millis() as u64,
            });
        }
        out
    }

    /// Takes the reservations of the process being upgraded: a host nobody
    /// serves here yet is kept for its agent's token, and requests for it
    /// wait for that agent to re-bind.
    pub fn import_reservations(&self, items: &[Reservation]) {
        if items.is_empty() {
            return;
        }
        let mut st = self.lock();
        let now = Instant::now();
        let mut taken = 0usize;
        for r in items {
            let scheme = match r.scheme.as_str() {
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                _ => continue,
            };
            let mut host = String::new();
            if !normalize_host(r.host.as_bytes(), &mut host) || !valid_hostname(&host) {
                continue;
            }
            let rec = st.hosts.entry((scheme, host)).or_default();
            if !rec.tunnels.is_empty() {
                continue;
            }
            let until = now + Duration::from_millis(r.remaining_ms.min(3_600_000));
            rec.reserved = Some((r.token.clone(), until));
            rec.handoff = true;
            taken += 1;
        }
        self.publish(&st);
        drop(st);
        info!(
            reservations = taken,
            "agent URLs reserved for the agents of the upgraded process"
        );
    }
}

fn remove_tunnel(st: &mut State, id: &str) {
    if let Some(t) = st.tunnels.remove(id) {
        let key = (t.scheme, t.host);
        let empty = match st.hosts.get_mut(&key) {
            Some(rec) => {
                rec.tunnels.retain(|x| x != id);
                rec.tunnels.is_empty() && rec.reserved.is_none()
            }
            None => false,
        };
        if empty {
            st.hosts.remove(&key);
        }
    }
}

/// Whether a credential's ACL lets it bind `host`: no rules (or `bind:*`)
/// allow every host; `bind:app.example.com` allows that name,
/// `bind:*.example.com` every name below example.com (ngrok's authtoken
/// ACL rules; label rules like `bind:app=x` match no hostname).
fn acl_allows(acl: &[String], host: &str) -> bool {
    acl.is_empty()
        || acl.iter().any(|rule| {
            let Some(target) = rule.strip_prefix("bind:") else {
                return false;
            };
            let target = target.to_ascii_lowercase();
            if target == "*" {
                return true;
            }
            match target.strip_prefix("*.") {
                Some(base) => host
                    .strip_suffix(base)
                    .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
                None => target == host,
            }
        })
}

/// A restored reservation's host (from the process being upgraded) is a
/// plain DNS name or a `*.` wildcard of one.
fn valid_hostname(h: &str) -> bool {
    let body = h.strip_prefix("*.").unwrap_or(h);
    !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The policy of a Bind: the legacy endpoint options translated into
/// rules (see [`legacy`]), then the agent's `TrafficPolicy` (JSON or YAML
/// text), compiled as one document, legacy rules first in each phase.
/// Options the edge cannot honour are refused, never silently ignored.
fn compile_bind_policy(
    raw: &serde_json::Value,
    opts: &HttpOpts,
) -> Result<Option<CompiledPolicy>, String> {
    let legacy = legacy::translate(raw)?;
    let user = if opts.traffic_policy.trim().is_empty() {
        None
    } else {
        Some(
            TrafficPolicy::parse(&opts.traffic_policy)
                .map_err(|e| format!("Invalid traffic policy: {e}"))?,
        )
    };
    if legacy.is_empty() && user.is_none() {
        return Ok(None);
    }
    let n_req = legacy.on_http_request.len();
    let n_res = legacy.on_http_response.len();
    let mut doc = legacy.policy()?;
    if let Some(user) = user {
        doc.on_http_request.extend(user.on_http_request);
        doc.on_http_response.extend(user.on_http_response);
        doc.on_tcp_connect.extend(user.on_tcp_connect);
    }
    CompiledPolicy::compile(&doc).map(Some).map_err(|mut e| {
        let offset = match e.phase {
            "on_http_request" => n_req,
            "on_http_response" => n_res,
            _ => 0,
        };
        match legacy::option_of(&e.rule_name) {
            Some(option) if e.rule_index < offset => format!(
                "The {option} endpoint option is invalid: {}: {}",
                e.location, e.reason
            ),
            _ => {
                // Number the agent's rules as the agent wrote them.
                e.rule_index -= offset.min(e.rule_index);
                format!("Invalid traffic policy: {e}")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn acl_rules_match_names_and_wildcards() {
        let acl = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(super::acl_allows(&[], "any.example.com"));
        assert!(super::acl_allows(&acl(&["bind:*"]), "any.example.com"));
        let rules = acl(&["bind:app.example.com", "bind:*.dev.example.com"]);
        assert!(super::acl_allows(&rules, "app.example.com"));
        assert!(super::acl_allows(&rules, "a.dev.example.com"));
        assert!(super::acl_allows(&rules, "a.b.dev.example.com"));
        assert!(!super::acl_allows(&rules, "dev.example.com"));
        assert!(!super::acl_allows(&rules, "xdev.example.com"));
        assert!(!super::acl_allows(&rules, "other.example.com"));
        assert!(!super::acl_allows(&acl(&["bind:app=x"]), "app.example.com"));
    }

    use super::*;
    use crate::tunnel::messages::BindExtra;

    fn reg() -> Registry {
        Registry::new(RegistryConfig {
            dev: true,
            auth_tokens: vec![],
            base_domain: Some("ringress.localhost".into()),
            reserve_grace: Duration::from_secs(30),
            workers: 2,
            http_port: 8080,
            https_port: Some(8443),
            reserved_domains: ReservedDomains::default(),
            cname_base: None,
        })
    }

    /// A production edge on 80/443 with base domain tunnel.example.com.
    fn prod(reserved: &[&str]) -> Registry {
        Registry::new(RegistryConfig {
            dev: false,
            auth_tokens: vec!["t".into()],
            base_domain: Some("tunnel.example.com".into()),
            http_port: 80,
            https_port: Some(443),
            reserved_domains: ReservedDomains::from_list(reserved.iter().copied()).unwrap(),
            ..reg().cfg
        })
    }

    fn prod_session(r: &Registry) -> SessionId {
        let s = r.new_session(0);
        let mut a = Auth::default();
        a.extra.auth_token = "t".into();
        r.auth(s, &a).expect("token");
        s
    }

    fn authed(r: &Registry, worker: usize) -> SessionId {
        let s = r.new_session(worker);
        r.auth(s, &Auth::default()).expect("dev accepts any token");
        s
    }

    fn bind_domain(domain: &str, pooling: bool) -> Bind {
        Bind {
            proto: "https".into(),
            opts: serde_json::json!({"Domain": domain, "Hostname": "", "ProxyProto": 0}),
            extra: BindExtra {
                pooling_enabled: pooling,
                ..BindExtra::default()
            },
            ..Bind::default()
        }
    }

    #[test]
    fn production_requires_a_known_token() {
        let r = Registry::new(RegistryConfig {
            dev: false,
            auth_tokens: vec!["secret".into()],
            ..reg().cfg
        });
        let s = r.new_session(0);
        let mut a = Auth::default();
        a.extra.auth_token = "nope".into();
        let e = r.auth(s, &a).expect_err("bad token");
        assert!(e.ends_with("\n\nERR_NGROK_107"), "{e}");
        a.extra.auth_token = "secret".into();
        assert_eq!(r.auth(s, &a).expect("good token").version, "3");
    }

    #[test]
    fn random_and_named_hosts() {
        let r = reg();
        let s = authed(&r, 0);
        let resp = r.bind(s, &bind_domain("", false));
        assert!(resp.error.is_empty(), "{}", resp.error);
        assert!(resp.url.starts_with("https://"), "{}", resp.url);
        assert!(
            resp.url.ends_with(".ringress.localhost:8443"),
            "{}",
            resp.url
        );
        assert!(!resp.extra.token.is_empty());
        assert_eq!(resp.opts["Auth"], "");
        let named = r.bind(s, &bind_domain("App.Example.test", false));
        assert_eq!(named.url, "https://app.example.test:8443");
        assert!(r.table().https.lookup("app.example.test").is_some());
    }

    #[test]
    fn url_beats_domain_beats_hostname() {
        let r = reg();
        let s = authed(&r, 0);
        let mut b = bind_domain("d.test", false);
        b.opts =
            serde_json::json!({"URL": "http://u.test", "Domain": "d.test", "Hostname": "h.test"});
        let resp = r.bind(s, &b);
        assert_eq!(resp.url, "http://u.test:8080");
        assert_eq!(resp.proto, "http");
        b.opts = serde_json::json!({"Hostname": "h.test"});
        assert_eq!(r.bind(s, &b).url, "https://h.test:8443");
    }

    #[test]
    fn conflicts_and_pooling() {
        let r = reg();
        let a = authed(&r, 0);
        let b = authed(&r, 1);
        assert!(r.bind(a, &bind_domain("x.test", false)).error.is_empty());
        let e = r.bind(b, &bind_domain("x.test", false)).error;
        assert!(e.ends_with("ERR_NGROK_334"), "{e}");
        let e = r.bind(b, &bind_domain("x.test", true)).error;
        assert!(e.ends_with("ERR_NGROK_334"), "{e}");
        assert!(r.bind(a, &bind_domain("p.test", true)).error.is_empty());
        assert!(r.bind(b, &bind_domain("p.test", true)).error.is_empty());
        let t = r.table();
        let ep = t.https.lookup("p.test").expect("online");
        assert_eq!(ep.tunnel.as_ref().map(|t| t.members.len()), Some(2));
    }

    #[test]
    fn one_group_is_one_binder() {
        let r = reg();
        let mut a = Auth::default();
        a.extra.ringress_group = "agent-1".into();
        let s0 = r.new_session(0);
        let s1 = r.new_session(1);
        r.auth(s0, &a).unwrap();
        r.auth(s1, &a).unwrap();
        assert!(r.bind(s0, &bind_domain("g.test", false)).error.is_empty());
        assert!(r.bind(s1, &bind_domain("g.test", false)).error.is_empty());
        let t = r.table();
        let target = t
            .https
            .lookup("g.test")
            .and_then(|e| e.tunnel.as_ref())
            .unwrap();
        assert_eq!(target.members.len(), 1);
        assert_eq!(target.members[0].sessions.len(), 2);
    }

    #[test]
    fn handed_over_urls_wait_for_their_agent_in_the_new_process() {
        // The old process: an agent holds a host.
        let old = reg();
        let s = authed(&old, 0);
        let first = old.bind(s, &bind_domain("h.test", false));
        let items = old.export_reservations();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].host, "h.test");
        assert_eq!(items[0].token, first.extra.token);
        // The new process: requests wait, strangers are refused, the
        // agent re-binds with its id and token.
        let new = reg();
        new.import_reservations(&items);
        let key = (Scheme::Https, "h.test".to_owned());
        assert!(new.table().awaiting.contains_key(&key));
        let other = authed(&new, 0);
        let e = new.bind(other, &bind_domain("h.test", false)).error;
        assert!(e.ends_with("ERR_NGROK_334"), "{e}");
        let s2 = authed(&new, 1);
        let mut again = bind_domain("h.test", false);
        again.id = first.id.clone();
        again.extra.token = first.extra.token.clone();
        let resp = new.bind(s2, &again);
        assert!(resp.error.is_empty(), "{}", resp.error);
        assert_eq!(resp.id, first.id);
        assert_eq!(resp.url, first.url);
        let table = new.table();
        assert!(table.https.lookup("h.test").is_some());
        assert!(!table.awaiting.contains_key(&key));
    }

    #[test]
    fn bad_handed_over_reservations_are_skipped() {
        let new = reg();
        new.import_reservations(&[
            Reservation {
                scheme: "tcp".into(),
                host: "a.test".into(),
                token: "t".into(),
                remaining_ms: 1000,
            },
            Reservation {
                scheme: "https".into(),
                host: "bad host!".into(),
                token: "t".into(),
                remaining_ms: 1000,
            },
        ]);
        assert!(new.table().awaiting.is_empty());
    }

    #[test]
    fn reconnect_keeps_id_and_reservation() {
        let r = reg();
        let s = authed(&r, 0);
        let first = r.bind(s, &bind_domain("r.test", false));
        r.session_gone(s);
        assert!(r.table().https.lookup("r.test").is_none());
        // Someone else cannot take the reserved host.
        let other = authed(&r, 1);
        let e = r.bind(other, &bind_domain("r.test", false)).error;
        assert!(e.ends_with("ERR_NGROK_334"), "{e}");
        // The agent comes back with its id and token.
        let s2 = authed(&r, 1);
        let mut again = bind_domain("r.test", false);
        again.id = first.id.clone();
        again.extra.token = first.extra.token.clone();
        let resp = r.bind(s2, &again);
        assert!(resp.error.is_empty(), "{}", resp.error);
        assert_eq!(resp.id, first.id);
        assert!(r.table().https.lookup("r.test").is_some());
    }

    #[test]
    fn unbind_is_idempotent() {
        let r = reg();
        let s = authed(&r, 0);
        let b = r.bind(s, &bind_domain("u.test", false));
        assert!(r.unbind(s, &b.id).error.is_empty());
        assert!(r.unbind(s, &b.id).error.is_empty());
        assert!(r.table().https.lookup("u.test").is_none());
        // Unbound (not dropped): no reservation.
        let other = authed(&r, 0);
        assert!(r
            .bind(other, &bind_domain("u.test", false))
            .error
            .is_empty());
    }

    #[test]
    fn bad_binds() {
        let r = reg();
        let s = r.new_session(0);
        assert!(r
            .bind(s, &bind_domain("a.test", false))
            .error
            .ends_with("ERR_NGROK_4018"));
        r.auth(s, &Auth::default()).unwrap();
        let mut b = bind_domain("bad!host.test", false);
        assert!(r.bind(s, &b).error.ends_with("ERR_NGROK_326"));
        b.proto = "tcp".into();
        assert!(r.bind(s, &b).error.ends_with("ERR_NGROK_9036"));
        let mut b = bind_domain("ok.test", false);
        b.opts["BasicAuth"] = serde_json::json!({"credentials": []});
        assert!(r.bind(s, &b).error.ends_with("ERR_NGROK_9026"));
        let mut b = bind_domain("ok.test", false);
        b.opts["TrafficPolicy"] = serde_json::json!("{not json");
        assert!(r.bind(s, &b).error.ends_with("ERR_NGROK_9026"));
        let mut b = bind_domain("", false);
        b.opts = serde_json::json!({"URL": "https://p.test:9999"});
        assert!(r.bind(s, &b).error.ends_with("ERR_NGROK_9035"));
    }

    fn bind_url(url: &str) -> Bind {
        Bind {
            proto: "https".into(),
            opts: serde_json::json!({"URL": url}),
            ..Bind::default()
        }
    }

    fn code_of(resp: &BindResp) -> &str {
        resp.error.rsplit("ERR_NGROK_").next().unwrap_or("")
    }

    #[test]
    fn bind_urls_follow_the_shared_rules() {
        let r = reg();
        let s = authed(&r, 0);
        for (url, code) in [
            ("https://x.test/", "9038"),
            ("https://x.test/path", "9037"),
            ("https://x.test:8080", "9035"),
            ("tcp://x.test:1", "9036"),
            ("https://a_b.test", "355"),
            ("https://a..b.test", "327"),
            ("https://app.*.test", "402"),
            ("https://x.test:0", "9030"),
            ("https://a.b.c.d.e.f.internal", "9031"),
        ] {
            let resp = r.bind(s, &bind_url(url));
            assert_eq!(code_of(&resp), code, "{url}: {}", resp.error);
        }
        // The scheme-only shorthand is a random host.
        let resp = r.bind(s, &bind_url("http://"));
        assert!(
            resp.url.starts_with("http://") && resp.url.ends_with(".ringress.localhost:8080"),
            "{}",
            resp.url
        );
        // `.internal` infers the internal binding; its port is kept.
        let resp = r.bind(s, &bind_url("https://api.internal:1234"));
        assert_eq!(resp.url, "https://api.internal:1234", "{}", resp.error);
        let mut b = bind_url("https://app.test");
        b.extra.bindings = vec!["internal".into()];
        assert_eq!(code_of(&r.bind(s, &b)), "9029");
        b.extra.bindings = vec!["edge".into()];
        assert_eq!(code_of(&r.bind(s, &b)), "15005");
    }

    #[test]
    fn production_binds_need_ownership() {
        let r = prod(&["app.example.com", "*.apps.example.com"]);
        let s = prod_session(&r);
        // Random names are always allowed, and so is re-binding one.
        let random = r.bind(s, &bind_domain("", false));
        assert!(random.error.is_empty(), "{}", random.error);
        assert!(
            random.url.ends_with(".tunnel.example.com"),
            "{}",
            random.url
        );
        let again = r.bind(prod_session(&r), &bind_url(&random.url));
        assert_eq!(
            code_of(&again),
            "334",
            "named, allowed, but online: {}",
            again.error
        );
        // Reserved names and wildcards.
        assert!(r
            .bind(s, &bind_url("https://app.example.com"))
            .error
            .is_empty());
        assert!(r
            .bind(s, &bind_url("https://x.apps.example.com"))
            .error
            .is_empty());
        assert!(r
            .bind(s, &bind_url("https://*.apps.example.com"))
            .error
            .is_empty());
        // Everything else is refused with ngrok's code.
        for (url, code) in [
            ("https://other.example.com", "319"),
            ("https://*.example.com", "318"),
            ("https://named.tunnel.example.com", "313"),
            ("https://a.b.tunnel.example.com", "354"),
            ("https://app.example.doesnotexist", "331"),
            ("https://app.example.com:8443", "9035"),
        ] {
            let resp = r.bind(s, &bind_url(url));
            assert_eq!(code_of(&resp), code, "{url}: {}", resp.error);
        }
        let mut sub = bind_domain("", false);
        sub.opts = serde_json::json!({"Subdomain": "named"});
        assert_eq!(code_of(&r.bind(s, &sub)), "313");
        // Internal endpoints need no reservation.
        assert!(r
            .bind(s, &bind_url("https://api.internal"))
            .error
            .is_empty());
        // The API's reservations join the config's.
        let mut api = ReservedDomains::new();
        api.insert("other.example.com");
        r.set_api_reserved_domains(&api);
        assert!(r
            .bind(s, &bind_url("https://other.example.com"))
            .error
            .is_empty());
        assert!(r.reserved_domains().covers("app.example.com"));
    }

    #[test]
    fn cloud_urls_for_the_api() {
        let r = prod(&["app.example.com"]);
        let u = r
            .check_cloud_url("https://app.example.com:443", &[])
            .unwrap();
        assert_eq!(
            u.display("app.example.com", &r.edge_urls()),
            "https://app.example.com"
        );
        assert_eq!(r.check_cloud_url("https://", &[]).unwrap_err().code, 249);
        assert_eq!(
            r.check_cloud_url("https://nope.example.com", &[])
                .unwrap_err()
                .code,
            319
        );
        assert!(r
            .check_cloud_url("https://api.internal", &["internal".into()])
            .is_ok());
        let p = r.domain_policy();
        assert!(p.public_suffix_rule);
        assert_eq!(p.base_domains, ["tunnel.example.com"]);
    }
    // ------------------------------------------------ legacy endpoint options

    use crate::http1::{RequestHead, ResponseHead};
    use crate::policy::pipeline::{self, RequestOutcome, ResponseOutcome};
    use crate::policy::{ConnInfo, Exchange, ReplyStyle, RequestInfo, ResponseInfo};
    use crate::proxy::headers::{
        encode_request_head_edited, encode_response_head_edited, ClientConn, ForwardInfo,
    };

    /// Binds `host` with these extra `Opts` (over the all-null options the
    /// Python SDK sends); the bound endpoint, or the bind error.
    fn bind_with(extra: serde_json::Value) -> Result<Arc<Endpoint>, String> {
        let r = reg();
        let s = authed(&r, 0);
        let mut opts = serde_json::json!({
            "Domain": "legacy.test", "Hostname": "", "Auth": "", "Subdomain": "",
            "HostHeaderRewrite": false, "LocalUrlScheme": null, "ProxyProto": 0,
            "Compression": null, "CircuitBreaker": null, "IPRestriction": null,
            "BasicAuth": null, "OAuth": null, "OIDC": null, "WebhookVerification": null,
            "MutualTLSCA": null, "RequestHeaders": null, "ResponseHeaders": null,
            "WebsocketTCPConverter": null, "UserAgentFilter": null, "TrafficPolicy": null,
        });
        if let (Some(o), Some(e)) = (opts.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        let b = Bind {
            proto: "https".into(),
            opts,
            ..Bind::default()
        };
        let resp = r.bind(s, &b);
        if !resp.error.is_empty() {
            return Err(resp.error);
        }
        Ok(r.table()
            .https
            .lookup("legacy.test")
            .cloned()
            .expect("bound"))
    }

    fn refused(extra: serde_json::Value) -> String {
        let e = bind_with(extra).expect_err("refused");
        assert!(e.ends_with("\n\nERR_NGROK_9026"), "{e}");
        e
    }

    /// The request phase: (edge reply, head sent upstream).
    fn request(ep: &Arc<Endpoint>, raw: &str, ip: &str, body: Option<&[u8]>) -> (String, String) {
        let mut head = RequestHead::new();
        assert_eq!(head.parse(raw.as_bytes(), 1 << 20), Ok(true), "{raw}");
        let conn = ConnInfo {
            client: Some(std::net::SocketAddr::new(ip.parse().expect("ip"), 40000)),
            server_port: 443,
            tls: None,
        };
        let info = RequestInfo {
            buf: raw.as_bytes(),
            head: &head,
            scheme: Scheme::Https,
            version: "HTTP/1.1",
            host: "legacy.test",
            conn: &conn,
        };
        let mut ex = Exchange::new();
        let mut out = Vec::new();
        let o = pipeline::on_http_request_now(
            ep,
            &info,
            body,
            &|_: &str| None,
            &mut ex,
            ReplyStyle::default(),
            &mut out,
        );
        let mut up = Vec::new();
        if matches!(o, RequestOutcome::Forward(_)) {
            let fi = ForwardInfo {
                client_ip: ip,
                proto: "https",
            };
            encode_request_head_edited(raw.as_bytes(), &head, &fi, Some(&ex.req), &mut up);
        }
        (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&up).into_owned(),
        )
    }

    fn get(extra: &str) -> String {
        format!("GET /p HTTP/1.1\r\nHost: legacy.test\r\n{extra}\r\n")
    }

    fn basic(user_pass: &str) -> String {
        use base64::Engine;
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn null_legacy_options_attach_no_policy() {
        let ep = bind_with(serde_json::json!({})).expect("bind");
        assert!(ep.policy.is_none());
        let ep =
            bind_with(serde_json::json!({"IPRestriction": {"allow_cidrs": null}})).expect("bind");
        assert!(ep.policy.is_none(), "empty lists restrict nothing");
    }

    #[test]
    fn legacy_basic_auth() {
        let ep = bind_with(serde_json::json!({"BasicAuth": {"credentials": [
            {"username": "user", "cleartext_password": "password1"},
            {"username": "ops", "cleartext_password": "another-one"}]}}))
        .expect("bind");
        let (reply, up) = request(&ep, &get(""), "192.0.2.1", None);
        assert!(reply.starts_with("HTTP/1.1 401 "), "{reply}");
        assert!(reply.contains("ERR_NGROK_3401") && up.is_empty());
        let (reply, up) = request(&ep, &get(&basic("user:wrong-pass")), "192.0.2.1", None);
        assert!(reply.starts_with("HTTP/1.1 401 ") && up.is_empty());
        for good in ["user:password1", "ops:another-one"] {
            let (reply, up) = request(&ep, &get(&basic(good)), "192.0.2.1", None);
            assert!(reply.is_empty() && up.starts_with("GET /p "), "{reply}");
        }
        // The older `Auth: "user:pass"` string means the same.
        let ep = bind_with(serde_json::json!({"Auth": "old:password9"})).expect("bind");
        let (_, up) = request(&ep, &get(&basic("old:password9")), "192.0.2.1", None);
        assert!(up.starts_with("GET /p "));
        assert!(request(&ep, &get(""), "192.0.2.1", None).1.is_empty());

        let e = refused(serde_json::json!({"BasicAuth": {"credentials": [
            {"username": "user", "cleartext_password": "short"}]}}));
        assert!(
            e.contains("The BasicAuth endpoint option is invalid")
                && e.contains("the password must be 8 to 128 characters"),
            "{e}"
        );
        let e = refused(serde_json::json!({"BasicAuth": {"credentials": [
            {"username": "user", "hashed_password": "JDJhJDEwJHh4eA=="}]}}));
        assert!(
            e.contains("BasicAuth.credentials[0]") && e.contains("hashed_password"),
            "{e}"
        );
        let e = refused(serde_json::json!({"BasicAuth": {"credentials": [
            {"username": "a:b", "cleartext_password": "password1"}]}}));
        assert!(e.contains("contains ':'"), "{e}");
    }

    #[test]
    fn legacy_ip_restriction() {
        let ep = bind_with(serde_json::json!({"IPRestriction": {
            "allow_cidrs": ["10.0.0.0/8"], "deny_cidrs": ["10.1.0.0/16"]}}))
        .expect("bind");
        for (ip, allowed) in [
            ("10.2.3.4", true),
            ("10.1.2.3", false),
            ("192.0.2.1", false),
        ] {
            let (reply, up) = request(&ep, &get(""), ip, None);
            if allowed {
                assert!(up.starts_with("GET /p "), "{ip}: {reply}");
            } else {
                assert!(reply.starts_with("HTTP/1.1 403 "), "{ip}: {reply}");
                assert!(reply.contains("ERR_NGROK_3205"));
            }
        }
        let e = refused(serde_json::json!({"IPRestriction": {"deny_cidrs": ["nope"]}}));
        assert!(
            e.contains("The IPRestriction endpoint option is invalid") && e.contains("deny[0]"),
            "{e}"
        );
    }

    #[test]
    fn legacy_request_and_response_headers() {
        let ep = bind_with(serde_json::json!({
            "RequestHeaders": {"add": ["x-a:1", "x-a: 2", "host:localhost"], "remove": ["x-drop"]},
            "ResponseHeaders": {"add": ["x-r:yes"], "remove": ["server"]},
        }))
        .expect("bind");
        let (_, up) = request(&ep, &get("X-Drop: 1\r\nX-Keep: 1\r\n"), "192.0.2.1", None);
        assert!(
            up.contains("x-a: 1\r\n") && up.contains("x-a: 2\r\n"),
            "{up}"
        );
        assert!(!up.to_ascii_lowercase().contains("x-drop"), "{up}");
        assert!(up.contains("X-Keep: 1\r\n"), "{up}");
        assert!(
            up.to_ascii_lowercase().contains("host: localhost\r\n"),
            "{up}"
        );

        let raw = b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 0\r\n\r\n";
        let mut res = ResponseHead::new();
        assert_eq!(res.parse(raw, 1 << 20, false), Ok(true));
        let mut ex = Exchange::new();
        let mut out = Vec::new();
        let o = pipeline::on_http_response(
            &ep,
            &ResponseInfo {
                buf: raw,
                head: &res,
            },
            &ConnInfo::default(),
            &mut ex,
            ReplyStyle::default(),
            &mut out,
        );
        assert_eq!(o, ResponseOutcome::Relay);
        let mut head = Vec::new();
        encode_response_head_edited(raw, &res, ClientConn::KeepAlive, Some(&ex.res), &mut head);
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.contains("x-r: yes\r\n") && !head.contains("Server"),
            "{head}"
        );

        let e = refused(serde_json::json!({"RequestHeaders": {"add": ["no-colon"]}}));
        assert!(e.contains("RequestHeaders.add[0]"), "{e}");
        let e = refused(serde_json::json!({"ResponseHeaders": {"remove": ["content-length"]}}));
        assert!(
            e.contains("The ResponseHeaders endpoint option is invalid"),
            "{e}"
        );
        let e = refused(serde_json::json!({"RequestHeaders": {"add": ["x:${req.method}"]}}));
        assert!(e.contains("interpolation"), "{e}");
    }

    #[test]
    fn legacy_compression_and_webhook() {
        let ep = bind_with(serde_json::json!({"Compression": {}})).expect("bind");
        assert!(ep.policy.as_ref().is_some_and(|p| p.compresses));

        let ep = bind_with(serde_json::json!({"WebhookVerification": {
            "provider": "github", "secret": "s3cr3t"}}))
        .expect("bind");
        assert!(ep.policy.as_ref().and_then(|p| p.body_limit()).is_some());
        let raw = "POST /hook HTTP/1.1\r\nHost: legacy.test\r\nContent-Length: 2\r\n\r\n";
        let (reply, _) = request(&ep, raw, "192.0.2.1", Some(b"{}"));
        assert!(reply.starts_with("HTTP/1.1 403 ") && reply.contains("ERR_NGROK_3204"));
        let e = refused(serde_json::json!({"WebhookVerification": {
            "provider": "github", "sealed_secret": "AAAA"}}));
        assert!(e.contains("sealed"), "{e}");
        let e = refused(serde_json::json!({"WebhookVerification": {
            "provider": "nosuch", "secret": "x"}}));
        assert!(
            e.contains("The WebhookVerification endpoint option is invalid"),
            "{e}"
        );
    }

    #[test]
    fn legacy_oauth_and_oidc() {
        let ep = bind_with(serde_json::json!({"OAuth": {
            "provider": "google", "client_id": "id-1", "client_secret": "secret-1",
            "allow_emails": ["a@example.com"], "allow_domains": null, "scopes": ["email"]}}))
        .expect("bind");
        assert!(ep.policy.is_some());
        // No managed app here: the SDK's bare oauth("google") is refused.
        let e = refused(serde_json::json!({"OAuth": {"provider": "google"}}));
        assert!(
            e.contains("The OAuth endpoint option is invalid") && e.contains("client_id"),
            "{e}"
        );
        let e = refused(serde_json::json!({"OAuth": {"provider": "google",
            "client_id": "id", "sealed_client_secret": "AAAA"}}));
        assert!(e.contains("OAuth.sealed_client_secret"), "{e}");

        let ep = bind_with(serde_json::json!({"OIDC": {
            "issuer_url": "https://id.example.com", "client_id": "id-2",
            "client_secret": "secret-2", "scopes": ["groups"], "allow_domains": ["example.com"]}}))
        .expect("bind");
        assert!(ep.policy.is_some());
        let e = refused(serde_json::json!({"OIDC": {"client_id": "x", "client_secret": "y"}}));
        assert!(e.contains("OIDC.issuer_url is required"), "{e}");
    }

    #[test]
    fn legacy_options_without_an_action_are_refused() {
        let e = refused(serde_json::json!({"HostHeaderRewrite": true}));
        assert!(e.contains("HostHeaderRewrite") && e.contains("host"), "{e}");
        for (name, v) in [
            (
                "CircuitBreaker",
                serde_json::json!({"error_threshold": 0.5}),
            ),
            ("MutualTLSCA", serde_json::json!({"mutual_tls_ca": "LS0t"})),
            ("UserAgentFilter", serde_json::json!({"allow": ["^curl"]})),
            ("WebsocketTCPConverter", serde_json::json!({})),
        ] {
            let e = refused(serde_json::json!({ name: v }));
            assert!(
                e.contains(&format!("The {name} endpoint option is not supported")),
                "{e}"
            );
        }
    }

    #[test]
    fn legacy_rules_run_before_the_traffic_policy() {
        let policy = r#"{"on_http_request":[{"actions":[{"type":"custom-response","config":{"status_code":200,"body":"from policy"}}]}]}"#;
        let ep = bind_with(serde_json::json!({
            "BasicAuth": {"credentials": [{"username": "user", "cleartext_password": "password1"}]},
            "TrafficPolicy": policy,
        }))
        .expect("bind");
        let (reply, _) = request(&ep, &get(""), "192.0.2.1", None);
        assert!(reply.starts_with("HTTP/1.1 401 "), "{reply}");
        let (reply, _) = request(&ep, &get(&basic("user:password1")), "192.0.2.1", None);
        assert!(reply.ends_with("from policy"), "{reply}");
        // Errors in the agent's policy are numbered as the agent wrote it.
        let e = refused(serde_json::json!({
            "BasicAuth": {"credentials": [{"username": "user", "cleartext_password": "password1"}]},
            "TrafficPolicy": r#"{"on_http_request":[{"actions":[{"type":"frobnicate"}]}]}"#,
        }));
        assert!(
            e.starts_with("Invalid traffic policy") && e.contains("on_http_request[0]"),
            "{e}"
        );
    }
}
