//! Immutable snapshots of everything the data plane reads (routes,
//! policies, settings), published by the control thread with `ArcSwap`
//! and cached per worker.
//!
//! A worker checks one shared generation counter per request (a read of a
//! cache line that only changes on reload) and only then touches the
//! `ArcSwap`; connections clone an `Rc` of the worker's cached `Arc`, so
//! the hot path never writes to memory shared between cores.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use rustls::sign::CertifiedKey;

use crate::config::{ConfigError, EdgeConfig, Settings, DEV_BASE_DOMAIN};
use crate::policy::CompiledPolicy;
use crate::route::{Endpoint, RouteTable, Scheme, Upstream};
use crate::tls::local_ca::LocalCa;
use crate::tls::{certified_key_from_pem, CertStore};

/// Everything a worker needs to serve a request, frozen.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub http_routes: RouteTable,
    pub https_routes: RouteTable,
    pub certs: CertStore,
    /// Hosts whose certificates come from ACME: only these get
    /// `/.well-known/acme-challenge/` answered by the edge.
    pub acme_domains: HashSet<String>,
    /// The local CA, under `--dev` only (on-demand issuance).
    pub dev_ca: Option<Arc<LocalCa>>,
    pub settings: Settings,
}

/// Certificate material owned by the control thread across reloads.
#[derive(Debug, Default)]
pub struct TlsMaterial {
    pub local_ca: Option<Arc<LocalCa>>,
    /// Certificates issued by ACME, by domain.
    pub acme: HashMap<String, Arc<CertifiedKey>>,
    /// Certificates uploaded through the API (`/tls_certificates`), with
    /// the names each covers; config files win over them.
    pub uploaded: Vec<(Vec<String>, Arc<CertifiedKey>)>,
    /// Reserved domains whose certificate comes from ACME (HTTP-01).
    pub reserved_acme: Vec<String>,
    /// Cloud endpoints from the control plane's store, routed exactly like
    /// the config's (a URL in both is refused).
    pub cloud: Vec<crate::config::EndpointConfig>,
}

impl TlsMaterial {
    /// Takes the store's view (cloud endpoints, uploaded certificates,
    /// reserved domains) in place of the previous one.
    pub fn set_cloud(&mut self, state: crate::control::plane::CloudState) {
        self.cloud = state.endpoints;
        self.uploaded = state.uploaded;
        self.reserved_acme = state.reserved_acme;
    }
}

/// Names the dev certificate covers.
fn dev_names() -> Vec<String> {
    vec![
        DEV_BASE_DOMAIN.to_owned(),
        format!("*.{DEV_BASE_DOMAIN}"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ]
}

fn build_certs(
    config: &EdgeConfig,
    tls: &TlsMaterial,
) -> Result<(CertStore, HashSet<String>), ConfigError> {
    let mut certs = CertStore::default();
    for (i, c) in config.tls.certificates.iter().enumerate() {
        let field = format!("tls.certificates[{i}]");
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| ConfigError::Field {
                field: field.clone(),
                reason: format!("cannot read {}: {e}", p.display()),
            })
        };
        let key = certified_key_from_pem(&read(&c.cert)?, &read(&c.key)?).map_err(|e| {
            ConfigError::Field {
                field: field.clone(),
                reason: format!("{} / {}: {e}", c.cert.display(), c.key.display()),
            }
        })?;
        for d in &c.domains {
            certs.insert(d, key.clone());
        }
        if c.default {
            certs.set_default(key.clone());
        }
    }
    for (names, key) in &tls.uploaded {
        for n in names {
            if !certs.covers(n) {
                certs.insert(n, key.clone());
            }
        }
    }
    let mut acme_domains = HashSet::new();
    if config.tls.acme.is_some() {
        for d in &tls.reserved_acme {
            if certs.covers(d) && !tls.acme.contains_key(d) {
                continue;
            }
            acme_domains.insert(d.clone());
            if let Some(key) = tls.acme.get(d) {
                certs.insert(d, key.clone());
            }
        }
    }
    if config.listen.https.is_none() {
        return Ok((certs, acme_domains));
    }
    if let Some(ca) = &tls.local_ca {
        let issue = |names: &[String]| {
            ca.issue(names).map_err(|e| ConfigError::Field {
                field: "dev CA".into(),
                reason: e.to_string(),
            })
        };
        let names = dev_names();
        let dev = issue(&names)?;
        for n in &names {
            if !certs.covers(n) {
                certs.insert(n, dev.clone());
            }
        }
        // Loopback by IP sends no SNI: the dev certificate answers it.
        certs.set_default(dev);
    }
    for e in config
        .endpoints
        .iter()
        .chain(tls.cloud.iter())
        .filter(|e| e.url.scheme == Scheme::Https)
    {
        let host = &e.url.host;
        if certs.covers(host)
            || (host.starts_with("*.") && certs.covers(&format!("x.{}", &host[2..])))
        {
            continue;
        }
        if let Some(ca) = &tls.local_ca {
            let key =
                ca.issue(std::slice::from_ref(host))
                    .map_err(|err| ConfigError::Endpoint {
                        url: e.url.original.clone(),
                        reason: err.to_string(),
                    })?;
            certs.insert(host, key);
            continue;
        }
        if host.starts_with("*.") {
            return Err(ConfigError::Endpoint {
                url: e.url.original.clone(),
                reason: "a wildcard https endpoint needs a certificate from [[tls.certificates]] (ACME HTTP-01 cannot validate wildcards)".into(),
            });
        }
        if config.tls.acme.is_none() {
            return Err(ConfigError::Endpoint {
                url: e.url.original.clone(),
                reason: "no certificate: add [acme] for automatic certificates or a [[tls.certificates]] entry".into(),
            });
        }
        acme_domains.insert(host.clone());
        if let Some(key) = tls.acme.get(host) {
            certs.insert(host, key.clone());
        }
    }
    Ok((certs, acme_domains))
}

impl Snapshot {
    /// Compiles policies, resolves upstream names and assembles the
    /// certificate set. Runs on the control thread: DNS and file reads here
    /// may block, a worker never does this.
    pub fn build(
        config: &EdgeConfig,
        generation: u64,
        tls: &TlsMaterial,
    ) -> Result<Snapshot, ConfigError> {
        let mut http_routes = RouteTable::default();
        let mut https_routes = RouteTable::default();
        for e in config.endpoints.iter().chain(tls.cloud.iter()) {
            let url = e.url.original.clone();
            let policy = e
                .traffic_policy
                .as_ref()
                .map(CompiledPolicy::compile)
                .transpose()
                .map_err(|source| ConfigError::Policy {
                    url: url.clone(),
                    source,
                })?;
            if e.upstream.is_none()
                && !policy
                    .as_ref()
                    .is_some_and(CompiledPolicy::always_terminates)
            {
                return Err(ConfigError::Endpoint {
                    url,
                    reason: "without an upstream, the traffic_policy must answer every request (e.g. custom-response)".into(),
                });
            }
            let upstream = match &e.upstream {
                Some(u) => Some(Upstream {
                    url: u.original.clone(),
                    addrs: resolve(&url, &u.host, u.port)?,
                }),
                None => None,
            };
            let endpoint = Arc::new(Endpoint {
                url: url.clone(),
                scheme: e.url.scheme,
                host: e.url.host.clone(),
                upstream,
                policy: policy.map(Arc::new),
                tunnel: None,
                observe: e.observe,
            });
            let table = match e.url.scheme {
                Scheme::Http => &mut http_routes,
                Scheme::Https => &mut https_routes,
            };
            if !table.insert(endpoint) {
                return Err(ConfigError::Endpoint {
                    url,
                    reason: "another endpoint already has this URL".into(),
                });
            }
        }
        let (certs, acme_domains) = build_certs(config, tls)?;
        Ok(Snapshot {
            generation,
            http_routes,
            https_routes,
            certs,
            acme_domains,
            dev_ca: tls.local_ca.clone(),
            settings: config.settings,
        })
    }
}

fn resolve(endpoint: &str, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConfigError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| ConfigError::Endpoint {
            url: endpoint.to_owned(),
            reason: format!("cannot resolve upstream host {host:?}: {e}"),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ConfigError::Endpoint {
            url: endpoint.to_owned(),
            reason: format!("upstream host {host:?} has no address"),
        });
    }
    Ok(addrs)
}

/// The published snapshot plus its generation counter.
#[derive(Debug)]
pub struct SnapshotStore {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
}

impl SnapshotStore {
    pub fn new(first: Snapshot) -> Self {
        let generation = AtomicU64::new(first.generation);
        SnapshotStore {
            current: ArcSwap::from_pointee(first),
            generation,
        }
    }

    /// Publishes a new snapshot; workers see it on their next request.
    pub fn publish(&self, next: Snapshot) {
        let generation = next.generation;
        self.current.store(Arc::new(next));
        self.generation.store(generation, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

/// A worker's cached view of the store.
///
/// `Rc<Arc<_>>` on purpose: cloning the `Rc` per request is a plain
/// increment in this worker's memory, where cloning the `Arc` would bounce
/// its shared reference count between cores.
#[allow(clippy::redundant_allocation)]
pub struct SnapshotCache {
    store: Arc<SnapshotStore>,
    cached: RefCell<Rc<Arc<Snapshot>>>,
}

impl SnapshotCache {
    pub fn new(store: Arc<SnapshotStore>) -> Self {
        let cached = RefCell::new(Rc::new(store.load()));
        SnapshotCache { store, cached }
    }

    /// The current snapshot; refreshed only when the generation moved.
    #[allow(clippy::redundant_allocation)]
    pub fn get(&self) -> Rc<Arc<Snapshot>> {
        let generation = self.store.generation();
        let mut cached = self.cached.borrow_mut();
        if cached.generation != generation {
            *cached = Rc::new(self.store.load());
        }
        cached.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_follows_publications() {
        let cfg = crate::config::file::parse_str("").expect("empty config");
        let store = Arc::new(SnapshotStore::new(
            Snapshot::build(&cfg, 1, &TlsMaterial::default()).expect("build"),
        ));
        let cache = SnapshotCache::new(store.clone());
        assert_eq!(cache.get().generation, 1);
        store.publish(Snapshot::build(&cfg, 2, &TlsMaterial::default()).expect("build"));
        assert_eq!(cache.get().generation, 2);
    }

    #[test]
    fn cloud_endpoint_must_terminate() {
        let cfg = crate::config::file::parse_str(
            "[[endpoints]]\nurl = \"http://a.example.com\"\ntraffic_policy = { on_http_request = [] }\n",
        )
        .expect("parses");
        let e =
            Snapshot::build(&cfg, 1, &TlsMaterial::default()).expect_err("no upstream, no answer");
        assert!(e.to_string().contains("must answer every request"), "{e}");
    }

    #[test]
    fn duplicate_urls_refused() {
        let cfg = crate::config::file::parse_str(
            "[[endpoints]]\nurl = \"http://a.example.com\"\nupstream = \"http://127.0.0.1:1\"\n[[endpoints]]\nurl = \"http://A.example.com\"\nupstream = \"http://127.0.0.1:2\"\n",
        )
        .expect("parses");
        assert!(Snapshot::build(&cfg, 1, &TlsMaterial::default()).is_err());
    }
}
