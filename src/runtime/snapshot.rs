//! Immutable snapshots of everything the data plane reads (routes,
//! policies, settings), published by the control thread with `ArcSwap`
//! and cached per worker.
//!
//! A worker checks one shared generation counter per request (a read of a
//! cache line that only changes on reload) and only then touches the
//! `ArcSwap`; connections clone an `Rc` of the worker's cached `Arc`, so
//! the hot path never writes to memory shared between cores.

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{ConfigError, EdgeConfig, Settings};
use crate::policy::CompiledPolicy;
use crate::route::{Endpoint, RouteTable, Scheme, Upstream};

/// Everything a worker needs to serve a request, frozen.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub http_routes: RouteTable,
    pub settings: Settings,
}

impl Snapshot {
    /// Compiles policies and resolves upstream names. Runs on the control
    /// thread: DNS here may block, a worker never does this.
    pub fn build(config: &EdgeConfig, generation: u64) -> Result<Snapshot, ConfigError> {
        let mut http_routes = RouteTable::default();
        for e in &config.endpoints {
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
                policy,
            });
            let table = match e.url.scheme {
                Scheme::Http => &mut http_routes,
                Scheme::Https => {
                    return Err(ConfigError::Endpoint {
                        url,
                        reason: "https endpoints are not available yet".into(),
                    })
                }
            };
            if !table.insert(endpoint) {
                return Err(ConfigError::Endpoint {
                    url,
                    reason: "another endpoint already has this URL".into(),
                });
            }
        }
        Ok(Snapshot {
            generation,
            http_routes,
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
        let store = Arc::new(SnapshotStore::new(Snapshot::build(&cfg, 1).expect("build")));
        let cache = SnapshotCache::new(store.clone());
        assert_eq!(cache.get().generation, 1);
        store.publish(Snapshot::build(&cfg, 2).expect("build"));
        assert_eq!(cache.get().generation, 2);
    }

    #[test]
    fn cloud_endpoint_must_terminate() {
        let cfg = crate::config::file::parse_str(
            "[[endpoints]]\nurl = \"http://a.example.com\"\ntraffic_policy = { on_http_request = [] }\n",
        )
        .expect("parses");
        let e = Snapshot::build(&cfg, 1).expect_err("no upstream, no answer");
        assert!(e.to_string().contains("must answer every request"), "{e}");
    }

    #[test]
    fn duplicate_urls_refused() {
        let cfg = crate::config::file::parse_str(
            "[[endpoints]]\nurl = \"http://a.example.com\"\nupstream = \"http://127.0.0.1:1\"\n[[endpoints]]\nurl = \"http://A.example.com\"\nupstream = \"http://127.0.0.1:2\"\n",
        )
        .expect("parses");
        assert!(Snapshot::build(&cfg, 1).is_err());
    }
}
