//! rustls certificate resolution from the current snapshot: adding or
//! renewing a certificate is a snapshot publication, so it never stalls a
//! worker or drops a connection.
//!
//! Under `--dev` only, a name that routes to an https endpoint but that no
//! certificate covers (a name two labels below a wildcard endpoint, say) is
//! issued a certificate by the local CA during the handshake, once, and
//! cached. That costs about a millisecond on the worker, which is fine for a
//! development edge and never happens in production.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::runtime::snapshot::SnapshotStore;
use crate::tunnel::registry::Registry;

/// Dev certificates issued on demand, at most this many.
const DEV_CACHE_MAX: usize = 1024;

#[derive(Debug)]
pub struct SnapshotResolver {
    store: Arc<SnapshotStore>,
    /// Agent endpoints (names bound by agents also get dev certificates).
    tunnels: Option<Arc<Registry>>,
    dev_issued: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl SnapshotResolver {
    pub fn new(store: Arc<SnapshotStore>, tunnels: Option<Arc<Registry>>) -> Self {
        SnapshotResolver {
            store,
            tunnels,
            dev_issued: Mutex::new(HashMap::new()),
        }
    }

    fn dev_issue(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let snap = self.store.load();
        let ca = snap.dev_ca.as_ref()?;
        let routed = snap.https_routes.lookup(name).is_some()
            || self
                .tunnels
                .as_ref()
                .is_some_and(|r| r.table().https.lookup(name).is_some());
        if !routed {
            return None;
        }
        let mut cache = self.dev_issued.lock().ok()?;
        if let Some(k) = cache.get(name) {
            return Some(k.clone());
        }
        match ca.issue(&[name.to_owned()]) {
            Ok(k) => {
                if cache.len() >= DEV_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(name.to_owned(), k.clone());
                Some(k)
            }
            Err(e) => {
                tracing::warn!(name, error = %e, "dev CA could not issue a certificate");
                None
            }
        }
    }
}

impl ResolvesServerCert for SnapshotResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snap = self.store.load();
        let sni = hello.server_name();
        if let Some(name) = sni {
            if let Some(k) = snap.certs.for_name(name) {
                return Some(k);
            }
            if snap.dev_ca.is_some() {
                if let Some(k) = self.dev_issue(name) {
                    return Some(k);
                }
            }
        }
        // No certificate: rustls aborts the handshake with an alert, the
        // clean failure for a missing SNI or an unknown name.
        snap.certs.resolve(None)
    }
}
