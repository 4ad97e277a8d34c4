//! The control plane's authority over API state: validates and commits
//! writes to the store (durable before the API replies), keeps the in-memory
//! key and credential sets the API and Auth read, and asks the edge's control
//! thread to republish the snapshot when cloud endpoints, reserved domains or
//! certificates change.
//!
//! Runs on the API thread's blocking pool and at start; never on a worker.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use super::records::{self, ApiKeyRec, CertRec, CredentialRec, DomainRec, EndpointRec};
use super::store::{Kind, Store, StoreError, Write};
use crate::config::url::EndpointUrl;
use crate::config::EndpointConfig;
use crate::control::api::ApiError;
use crate::policy::TrafficPolicy;
use crate::tunnel::registry::{Registry, TokenCheck};

/// Everything in the store that shapes the data plane's snapshot.
#[derive(Debug, Clone, Default)]
pub struct CloudState {
    pub endpoints: Vec<EndpointConfig>,
    /// Uploaded certificates and the reserved domains they serve.
    pub uploaded: Vec<(Vec<String>, Arc<CertifiedKey>)>,
    /// Exact reserved domains whose certificate comes from ACME.
    pub reserved_acme: Vec<String>,
}

/// Publishes a new cloud state into the snapshot (the edge's control
/// thread). Blocking; `Err` says why the snapshot could not be built.
pub trait Publisher: Send + Sync + 'static {
    fn apply(&self, state: CloudState) -> Result<(), String>;
}

/// Settings the plane needs from the edge.
#[derive(Debug, Clone, Default)]
pub struct PlaneConfig {
    pub dev: bool,
    /// Where users point their DNS (`cname_target`): the edge's base domain.
    pub base_domain: Option<String>,
    /// `[acme]` is configured: exact reserved domains get certificates.
    pub acme: bool,
}

pub struct Plane {
    store: Arc<dyn Store>,
    cfg: PlaneConfig,
    publisher: std::sync::OnceLock<Arc<dyn Publisher>>,
    registry: std::sync::OnceLock<Arc<Registry>>,
    /// Digests of valid API key secrets.
    keys: ArcSwap<HashSet<String>>,
    /// Credential id by token digest.
    /// Token digest → (credential id, its `bind:` ACL rules).
    creds: ArcSwap<HashMap<String, CredentialEntry>>,
    /// URLs of the config file's endpoints (read-only beside the store).
    config_urls: ArcSwap<Vec<String>>,
    /// Serializes writes: check-then-commit is atomic.
    write: Mutex<()>,
}

impl std::fmt::Debug for Plane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plane").finish_non_exhaustive()
    }
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Closed => ApiError::new(503, 503, e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::internal(format!("corrupt record: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(e.to_string()))
}

/// The id a config endpoint is listed under: stable across restarts.
pub fn config_endpoint_id(url: &str) -> String {
    format!("ep_cfg{}", &records::digest(url)[..21])
}

impl Plane {
    pub fn new(store: Arc<dyn Store>, cfg: PlaneConfig) -> Result<Arc<Plane>, StoreError> {
        let plane = Arc::new(Plane {
            store,
            cfg,
            publisher: std::sync::OnceLock::new(),
            registry: std::sync::OnceLock::new(),
            keys: ArcSwap::from_pointee(HashSet::new()),
            creds: ArcSwap::from_pointee(HashMap::new()),
            config_urls: ArcSwap::from_pointee(Vec::new()),
            write: Mutex::new(()),
        });
        plane.reload_secrets()?;
        Ok(plane)
    }

    pub fn set_publisher(&self, p: Arc<dyn Publisher>) {
        let _ = self.publisher.set(p);
    }

    pub fn set_registry(&self, r: Arc<Registry>) {
        let _ = self.registry.set(r);
    }

    pub fn set_config_urls(&self, urls: Vec<String>) {
        self.config_urls.store(Arc::new(urls));
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &PlaneConfig {
        &self.cfg
    }

    fn reload_secrets(&self) -> Result<(), StoreError> {
        let mut keys = HashSet::new();
        for (_, v) in self.store.list(Kind::ApiKeys)? {
            if let Ok(k) = serde_json::from_slice::<ApiKeyRec>(&v) {
                keys.insert(k.token_digest);
            }
        }
        self.keys.store(Arc::new(keys));
        let mut creds = HashMap::new();
        for (_, v) in self.store.list(Kind::Credentials)? {
            if let Ok(c) = serde_json::from_slice::<CredentialRec>(&v) {
                creds.insert(c.token_digest, (c.id, Arc::new(c.acl)));
            }
        }
        self.creds.store(Arc::new(creds));
        Ok(())
    }

    pub fn key_is_valid(&self, secret: &str) -> bool {
        self.keys.load().contains(&records::digest(secret))
    }

    pub fn has_api_keys(&self) -> bool {
        !self.keys.load().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- generic record access ----

    pub fn list<T: serde::de::DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>, ApiError> {
        self.store
            .list(kind)
            .map_err(store_err)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    pub fn get<T: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        what: &str,
        id: &str,
    ) -> Result<T, ApiError> {
        match self.store.get(kind, id).map_err(store_err)? {
            Some(v) => decode(&v),
            None => Err(ApiError::not_found(what, id)),
        }
    }

    fn put<T: serde::Serialize>(&self, kind: Kind, id: &str, v: &T) -> Result<(), ApiError> {
        self.store
            .write(vec![Write::Put(kind, id.to_owned(), encode(v)?)])
            .map_err(store_err)
    }

    fn delete(&self, kind: Kind, id: &str) -> Result<(), ApiError> {
        self.store
            .write(vec![Write::Delete(kind, id.to_owned())])
            .map_err(store_err)
    }

    // ---- snapshot ----

    /// The cloud state as stored now.
    pub fn cloud_state(&self) -> Result<CloudState, String> {
        let mut state = CloudState::default();
        let eps: Vec<EndpointRec> = self.list(Kind::Endpoints).map_err(|e| e.msg)?;
        for e in eps {
            state
                .endpoints
                .push(endpoint_config(&e).map_err(|m| format!("{}: {m}", e.url))?);
        }
        let certs: Vec<CertRec> = self.list(Kind::TlsCertificates).map_err(|e| e.msg)?;
        let mut keys: HashMap<String, Arc<CertifiedKey>> = HashMap::new();
        for c in certs {
            match crate::tls::certified_key_from_pem(
                c.certificate_pem.as_bytes(),
                c.private_key_pem.as_bytes(),
            ) {
                Ok(k) => {
                    keys.insert(c.id.clone(), k);
                }
                Err(e) => warn!(id = %c.id, "stored certificate unusable: {e}"),
            }
        }
        let domains: Vec<DomainRec> = self.list(Kind::ReservedDomains).map_err(|e| e.msg)?;
        for d in domains {
            match &d.certificate_id {
                Some(cid) => {
                    if let Some(k) = keys.get(cid) {
                        state.uploaded.push((vec![d.domain.clone()], k.clone()));
                    }
                }
                None if !d.domain.starts_with("*.") => state.reserved_acme.push(d.domain.clone()),
                None => {}
            }
        }
        Ok(state)
    }

    /// Publishes the stored state; on failure undoes `undo` (the write just
    /// made) so that nothing changed.
    /// Gives Bind the store's reserved domains (ownership).
    pub fn publish_domains(&self) {
        let Some(registry) = self.registry.get() else {
            return;
        };
        let names = self.reserved_domain_names();
        match crate::control::domains::ReservedDomains::from_list(names.iter().map(String::as_str))
        {
            Ok(set) => registry.set_api_reserved_domains(&set),
            Err(e) => warn!("stored reserved domains unusable: {}", e.message),
        }
    }

    fn republish(&self, undo: Vec<Write>) -> Result<(), ApiError> {
        let result = self.republish_inner(undo);
        self.publish_domains();
        result
    }

    fn republish_inner(&self, undo: Vec<Write>) -> Result<(), ApiError> {
        let Some(p) = self.publisher.get() else {
            return Ok(());
        };
        let result = self.cloud_state().and_then(|s| p.apply(s));
        if let Err(msg) = result {
            if let Err(e) = self.store.write(undo) {
                warn!("cannot undo a refused change: {e}");
            }
            return Err(ApiError::bad_request(
                9026,
                format!("The change cannot be applied to the edge: {msg}"),
            ));
        }
        Ok(())
    }

    fn undo_of(&self, kind: Kind, id: &str) -> Result<Vec<Write>, ApiError> {
        Ok(match self.store.get(kind, id).map_err(store_err)? {
            Some(old) => vec![Write::Put(kind, id.to_owned(), old)],
            None => vec![Write::Delete(kind, id.to_owned())],
        })
    }

    fn put_published<T: serde::Serialize>(
        &self,
        kind: Kind,
        id: &str,
        v: &T,
    ) -> Result<(), ApiError> {
        let undo = self.undo_of(kind, id)?;
        self.put(kind, id, v)?;
        self.republish(undo)
    }

    fn delete_published(&self, kind: Kind, id: &str) -> Result<(), ApiError> {
        let undo = self.undo_of(kind, id)?;
        self.delete(kind, id)?;
        self.republish(undo)
    }

    // ---- endpoints ----

    /// Every URL in use: config endpoints, cloud endpoints (but `except`),
    /// and agent endpoints.
    fn url_taken(&self, url: &str, except: Option<&str>) -> Result<bool, ApiError> {
        if self
            .config_urls
            .load()
            .iter()
            .any(|u| records::canonical_url(u) == url)
        {
            return Ok(true);
        }
        let eps: Vec<EndpointRec> = self.list(Kind::Endpoints)?;
        if eps
            .iter()
            .any(|e| Some(e.id.as_str()) != except && e.url == url)
        {
            return Ok(true);
        }
        Ok(self.registry.get().is_some_and(|r| {
            r.tunnels()
                .iter()
                .any(|t| records::canonical_url(&t.url) == url)
        }))
    }

    pub fn create_endpoint(&self, mut rec: EndpointRec) -> Result<EndpointRec, ApiError> {
        let _g = self.lock();
        rec.url = check_endpoint_with(&rec, self.registry.get())?;
        if self.url_taken(&rec.url, None)? {
            return Err(ApiError::bad_request(
                334,
                format!(
                    "The endpoint URL {} is already in use on this edge.",
                    rec.url
                ),
            ));
        }
        rec.id = records::new_id("ep");
        rec.created_at = records::now();
        rec.updated_at = rec.created_at.clone();
        self.put_published(Kind::Endpoints, &rec.id.clone(), &rec)?;
        info!(id = %rec.id, url = %rec.url, "cloud endpoint created");
        Ok(rec)
    }

    pub fn update_endpoint(
        &self,
        id: &str,
        f: impl FnOnce(&mut EndpointRec),
    ) -> Result<EndpointRec, ApiError> {
        let _g = self.lock();
        let mut rec: EndpointRec = self.get(Kind::Endpoints, "endpoint", id)?;
        f(&mut rec);
        rec.url = check_endpoint_with(&rec, self.registry.get())?;
        if self.url_taken(&rec.url, Some(id))? {
            return Err(ApiError::bad_request(
                334,
                format!(
                    "The endpoint URL {} is already in use on this edge.",
                    rec.url
                ),
            ));
        }
        rec.updated_at = records::now();
        self.put_published(Kind::Endpoints, id, &rec)?;
        info!(id, url = %rec.url, "cloud endpoint updated");
        Ok(rec)
    }

    pub fn delete_endpoint(&self, id: &str) -> Result<(), ApiError> {
        let _g = self.lock();
        if self
            .store
            .get(Kind::Endpoints, id)
            .map_err(store_err)?
            .is_none()
        {
            if self.endpoint_url_by_id(id).is_some() {
                return Err(ApiError::bad_request(
                    9040,
                    "Only cloud endpoints can be deleted through the API (config and agent endpoints are read-only).",
                ));
            }
            return Err(ApiError::not_found("endpoint", id));
        }
        self.delete_published(Kind::Endpoints, id)?;
        info!(id, "cloud endpoint deleted");
        Ok(())
    }

    /// The URL of a config, cloud or agent endpoint by its API id (for
    /// `observe`'s `/endpoints/{id}/requests`).
    pub fn endpoint_url_by_id(&self, id: &str) -> Option<String> {
        if let Ok(Some(v)) = self.store.get(Kind::Endpoints, id) {
            return serde_json::from_slice::<EndpointRec>(&v)
                .ok()
                .map(|e| e.url);
        }
        if let Some(u) = self
            .config_urls
            .load()
            .iter()
            .find(|u| config_endpoint_id(u) == id)
        {
            return Some(u.clone());
        }
        let tunnel = id.strip_prefix("ep_").unwrap_or(id);
        self.registry
            .get()?
            .tunnels()
            .into_iter()
            .find(|t| t.id == tunnel || t.id == id)
            .map(|t| t.url)
    }

    pub fn config_urls(&self) -> Arc<Vec<String>> {
        self.config_urls.load_full()
    }

    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.registry.get()
    }

    // ---- reserved domains ----

    pub fn create_domain(&self, mut rec: DomainRec) -> Result<DomainRec, ApiError> {
        let _g = self.lock();
        let all: Vec<DomainRec> = self.list(Kind::ReservedDomains)?;
        // .internal names are never reserved (the registry's rules allow
        // any name under --dev, where the public-suffix rule is off).
        let bare = rec.domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let bare = bare.strip_prefix("*.").unwrap_or(&bare);
        if bare == "internal" || bare.ends_with(".internal") {
            return Err(ApiError::bad_request(
                326,
                ".internal names are not reserved: they need no reservation.",
            ));
        }
        match self.registry.get() {
            Some(registry) => {
                let existing = registry.reserved_domains();
                let new = registry
                    .domain_policy()
                    .check_new(
                        &rec.domain,
                        &existing,
                        &crate::tunnel::registry::random_hex(6),
                    )
                    .map_err(|e| ApiError::bad_request(e.code, e.message))?;
                rec.domain = new.domain;
                rec.cname_target = new.cname_target;
            }
            None => {
                rec.domain = check_domain(&rec.domain)?;
                rec.cname_target = self.cname_target(&rec.domain);
            }
        }
        if all.iter().any(|d| d.domain == rec.domain) {
            return Err(ApiError::bad_request(
                413,
                format!("The domain {} is already reserved.", rec.domain),
            ));
        }
        self.check_domain_cert(&mut rec)?;
        rec.id = records::new_id("rd");
        rec.created_at = records::now();
        self.put_published(Kind::ReservedDomains, &rec.id.clone(), &rec)?;
        info!(id = %rec.id, domain = %rec.domain, "domain reserved");
        Ok(rec)
    }

    fn cname_target(&self, domain: &str) -> Option<String> {
        let base = self.cfg.base_domain.as_deref()?;
        let bare = domain.strip_prefix("*.").unwrap_or(domain);
        if bare == base || bare.ends_with(&format!(".{base}")) {
            None
        } else {
            Some(base.to_owned())
        }
    }

    fn check_domain_cert(&self, rec: &mut DomainRec) -> Result<(), ApiError> {
        if rec.certificate_id.is_some() && rec.certificate_management_policy.is_some() {
            return Err(ApiError::bad_request(
                434,
                "certificate_id and certificate_management_policy are mutually exclusive.",
            ));
        }
        if let Some(cid) = &rec.certificate_id {
            let _: CertRec = self.get(Kind::TlsCertificates, "tls_certificate", cid)?;
            return Ok(());
        }
        if rec.domain.starts_with("*.") {
            return Err(ApiError::bad_request(
                435,
                format!(
                    "A wildcard domain ({}) needs an uploaded certificate: this edge issues ACME certificates with HTTP-01 only, which cannot validate wildcards, and DNS-01 is not available. Upload one with POST /tls_certificates and pass its id as certificate_id.",
                    rec.domain
                ),
            ));
        }
        if let Some(p) = &rec.certificate_management_policy {
            if p.authority != "letsencrypt" {
                return Err(ApiError::bad_request(
                    436,
                    "certificate_management_policy.authority must be \"letsencrypt\" (the edge's [acme] directory).",
                ));
            }
        }
        if !self.cfg.acme && !self.cfg.dev {
            return Err(ApiError::bad_request(
                437,
                "This edge has no [acme] configured, so it cannot get a certificate for the domain: configure [acme] or upload a certificate and pass certificate_id.",
            ));
        }
        if rec.certificate_management_policy.is_none() {
            rec.certificate_management_policy = Some(records::CertPolicy {
                authority: "letsencrypt".into(),
                private_key_type: "ecdsa".into(),
            });
        }
        Ok(())
    }

    pub fn update_domain(
        &self,
        id: &str,
        f: impl FnOnce(&mut DomainRec) -> Result<(), ApiError>,
    ) -> Result<DomainRec, ApiError> {
        let _g = self.lock();
        let mut rec: DomainRec = self.get(Kind::ReservedDomains, "reserved_domain", id)?;
        f(&mut rec)?;
        self.check_domain_cert(&mut rec)?;
        self.put_published(Kind::ReservedDomains, id, &rec)?;
        Ok(rec)
    }

    pub fn delete_domain(&self, id: &str) -> Result<(), ApiError> {
        let _g = self.lock();
        let rec: DomainRec = self.get(Kind::ReservedDomains, "reserved_domain", id)?;
        let eps: Vec<EndpointRec> = self.list(Kind::Endpoints)?;
        if let Some(e) = eps
            .iter()
            .find(|e| domain_covers(&rec.domain, &records::url_parts(&e.url).1))
        {
            return Err(ApiError::bad_request(
                446,
                format!(
                    "The domain is still used by cloud endpoint {} ({}); delete it first.",
                    e.id, e.url
                ),
            ));
        }
        self.delete_published(Kind::ReservedDomains, id)
    }

    /// Reserved domains, for Bind's ownership check (`urls`'s domains type).
    pub fn reserved_domain_names(&self) -> Vec<String> {
        self.list::<DomainRec>(Kind::ReservedDomains)
            .map(|v| v.into_iter().map(|d| d.domain).collect())
            .unwrap_or_default()
    }

    // ---- TLS certificates ----

    pub fn create_certificate(&self, mut rec: CertRec) -> Result<CertRec, ApiError> {
        let _g = self.lock();
        crate::tls::certified_key_from_pem(
            rec.certificate_pem.as_bytes(),
            rec.private_key_pem.as_bytes(),
        )
        .map_err(|e| ApiError::bad_request(400, format!("Invalid certificate or key: {e}")))?;
        if let Ok(chain) = crate::tls::acme::x509::parse_chain_pem(&rec.certificate_pem) {
            if let Some(info) = chain
                .first()
                .and_then(|c| crate::tls::acme::x509::leaf_info(c).ok())
            {
                let t = |s: std::time::SystemTime| {
                    chrono::DateTime::<chrono::Utc>::from(s)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                };
                rec.not_before = Some(t(info.not_before));
                rec.not_after = Some(t(info.not_after));
            }
        }
        rec.id = records::new_id("cert");
        rec.created_at = records::now();
        self.put(Kind::TlsCertificates, &rec.id, &rec)?;
        Ok(rec)
    }

    pub fn update_certificate(
        &self,
        id: &str,
        f: impl FnOnce(&mut CertRec),
    ) -> Result<CertRec, ApiError> {
        let _g = self.lock();
        let mut rec: CertRec = self.get(Kind::TlsCertificates, "tls_certificate", id)?;
        f(&mut rec);
        self.put(Kind::TlsCertificates, id, &rec)?;
        Ok(rec)
    }

    pub fn delete_certificate(&self, id: &str) -> Result<(), ApiError> {
        let _g = self.lock();
        let _: CertRec = self.get(Kind::TlsCertificates, "tls_certificate", id)?;
        let domains: Vec<DomainRec> = self.list(Kind::ReservedDomains)?;
        if let Some(d) = domains
            .iter()
            .find(|d| d.certificate_id.as_deref() == Some(id))
        {
            return Err(ApiError::bad_request(
                447,
                format!(
                    "The certificate is used by reserved domain {} ({}); detach it first.",
                    d.id, d.domain
                ),
            ));
        }
        self.delete(Kind::TlsCertificates, id)
    }

    // ---- credentials ----

    pub fn create_credential(
        &self,
        mut rec: CredentialRec,
    ) -> Result<(CredentialRec, String), ApiError> {
        let _g = self.lock();
        check_acl(&rec.acl)?;
        let token = records::new_token();
        rec.token_digest = records::digest(&token);
        rec.id = records::new_id("cr");
        rec.created_at = records::now();
        self.put(Kind::Credentials, &rec.id, &rec)?;
        self.reload_secrets().map_err(store_err)?;
        info!(id = %rec.id, "credential created");
        Ok((rec, token))
    }

    pub fn update_credential(
        &self,
        id: &str,
        f: impl FnOnce(&mut CredentialRec),
    ) -> Result<CredentialRec, ApiError> {
        let _g = self.lock();
        let mut rec: CredentialRec = self.get(Kind::Credentials, "credential", id)?;
        f(&mut rec);
        check_acl(&rec.acl)?;
        self.put(Kind::Credentials, id, &rec)?;
        Ok(rec)
    }

    pub fn delete_credential(&self, id: &str) -> Result<(), ApiError> {
        let _g = self.lock();
        let _: CredentialRec = self.get(Kind::Credentials, "credential", id)?;
        self.delete(Kind::Credentials, id)?;
        self.reload_secrets().map_err(store_err)?;
        let closed = self
            .registry
            .get()
            .map(|r| r.revoke_credential(id))
            .unwrap_or(0);
        info!(id, sessions = closed, "credential revoked");
        Ok(())
    }

    // ---- API keys ----

    pub fn create_api_key(
        &self,
        description: &str,
        metadata: &str,
    ) -> Result<(ApiKeyRec, String), ApiError> {
        let _g = self.lock();
        let token = records::new_token();
        let rec = ApiKeyRec {
            id: records::new_id("ak"),
            created_at: records::now(),
            description: description.to_owned(),
            metadata: metadata.to_owned(),
            token_digest: records::digest(&token),
        };
        self.put(Kind::ApiKeys, &rec.id, &rec)?;
        self.reload_secrets().map_err(store_err)?;
        Ok((rec, token))
    }

    pub fn update_api_key(
        &self,
        id: &str,
        f: impl FnOnce(&mut ApiKeyRec),
    ) -> Result<ApiKeyRec, ApiError> {
        let _g = self.lock();
        let mut rec: ApiKeyRec = self.get(Kind::ApiKeys, "api_key", id)?;
        f(&mut rec);
        self.put(Kind::ApiKeys, id, &rec)?;
        Ok(rec)
    }

    pub fn delete_api_key(&self, id: &str) -> Result<(), ApiError> {
        let _g = self.lock();
        let _: ApiKeyRec = self.get(Kind::ApiKeys, "api_key", id)?;
        self.delete(Kind::ApiKeys, id)?;
        self.reload_secrets().map_err(store_err)
    }
}

impl TokenCheck for Plane {
    fn credential_for(&self, token: &str) -> Option<String> {
        self.creds
            .load()
            .get(&records::digest(token))
            .map(|(id, _)| id.clone())
    }

    fn acl_for(&self, credential: &str) -> Option<Arc<Vec<String>>> {
        self.creds
            .load()
            .values()
            .find(|(id, _)| id == credential)
            .map(|(_, acl)| acl.clone())
    }

    fn is_empty(&self) -> bool {
        self.creds.load().is_empty()
    }
}

/// A credential as Auth and Bind see it: its id and its `bind:` ACL.
type CredentialEntry = (String, Arc<Vec<String>>);

/// `*.example.com` covers every name below it; an exact name only itself.
pub fn domain_covers(domain: &str, host: &str) -> bool {
    match domain.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        None => domain == host,
    }
}

/// The record as the snapshot builder takes it.
pub fn endpoint_config(e: &EndpointRec) -> Result<EndpointConfig, String> {
    // The URL was checked against the edge's real ports when it was
    // written; here only its shape is read back.
    let (_, _, port) = records::url_parts(&e.url);
    let edge = crate::control::url_rules::EdgeUrls {
        http_port: port,
        https_port: Some(port),
        base_domains: Vec::new(),
        public_suffix_rule: false,
        serves_tcp_tls: false,
    };
    let url = EndpointUrl::parse(&e.url, &edge).map_err(|x| x.to_string())?;
    let policy = TrafficPolicy::parse(&e.traffic_policy).map_err(|x| x.to_string())?;
    Ok(EndpointConfig {
        url,
        upstream: None,
        traffic_policy: Some(policy),
        observe: Default::default(),
    })
}

/// Validates a cloud endpoint with the shared URL rules and domain
/// ownership (`control::url_rules`, `control::domains`, through the
/// registry that knows the edge's ports and reserved domains), then the
/// policy; returns its canonical URL.
fn check_endpoint_with(
    rec: &EndpointRec,
    registry: Option<&Arc<Registry>>,
) -> Result<String, ApiError> {
    let Some(registry) = registry else {
        return check_endpoint(rec);
    };
    registry
        .check_cloud_url(rec.url.trim(), &rec.bindings)
        .map_err(|e| ApiError::bad_request(e.code, e.message))?;
    check_policy(rec)?;
    Ok(records::canonical_url(rec.url.trim()))
}

/// Validates a cloud endpoint (without a registry: unit tests); returns
/// its canonical URL.
fn check_endpoint(rec: &EndpointRec) -> Result<String, ApiError> {
    let url = rec.url.trim();
    if url.is_empty() {
        return Err(ApiError::bad_request(
            249,
            "url is required (a full URL, e.g. https://app.example.com).",
        ));
    }
    let (_, _, p) = records::url_parts(url);
    let any_port = crate::control::url_rules::EdgeUrls {
        http_port: p,
        https_port: Some(p),
        base_domains: Vec::new(),
        public_suffix_rule: false,
        serves_tcp_tls: false,
    };
    let parsed = EndpointUrl::parse(url, &any_port)
        .map_err(|e| ApiError::bad_request(249, format!("Invalid endpoint URL: {e}")))?;
    let (_, _, port) = records::url_parts(url);
    let internal = parsed.host.ends_with(".internal");
    let default = if url.starts_with("http://") { 80 } else { 443 };
    if !internal && port != default {
        return Err(ApiError::bad_request(
            9035,
            format!(
                "Invalid endpoint URL {url}: a public {} endpoint must use port {default}.",
                parsed.scheme.as_str()
            ),
        ));
    }
    if rec.bindings.len() > 1 {
        return Err(ApiError::bad_request(
            9029,
            "bindings takes exactly one value.",
        ));
    }
    match rec.bindings.first().map(String::as_str) {
        None | Some("public") if internal => {
            if rec.bindings.is_empty() {
                // inferred internal
            } else {
                return Err(ApiError::bad_request(
                    9029,
                    "A .internal URL needs the internal binding.",
                ));
            }
        }
        Some("internal") if !internal => {
            return Err(ApiError::bad_request(
                9029,
                "The internal binding needs a URL ending in .internal.",
            ));
        }
        None | Some("public") | Some("internal") => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                9029,
                format!("Unsupported binding {other:?} (public or internal)."),
            ));
        }
    }
    check_policy(rec)?;
    Ok(records::canonical_url(url))
}

/// The policy must parse, compile and answer every request.
fn check_policy(rec: &EndpointRec) -> Result<(), ApiError> {
    if rec.traffic_policy.trim().is_empty() {
        return Err(ApiError::bad_request(
            9026,
            "traffic_policy is required: a cloud endpoint has no upstream, so its policy must answer every request (custom-response, deny, forward-internal...).",
        ));
    }
    let compiled = crate::policy::CompiledPolicy::from_text(&rec.traffic_policy)
        .map_err(|e| ApiError::bad_request(9026, format!("Invalid traffic_policy: {e}")))?;
    if !compiled.always_terminates() {
        return Err(ApiError::bad_request(
            9026,
            "The traffic_policy must end in a terminating action: a cloud endpoint has no upstream, so an on_http_request rule without expressions must run custom-response, deny or forward-internal.",
        ));
    }
    Ok(())
}

/// Validates a domain name to reserve (lowercased).
fn check_domain(d: &str) -> Result<String, ApiError> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() {
        return Err(ApiError::bad_request(400, "domain is required."));
    }
    let bare = d.strip_prefix("*.").unwrap_or(&d);
    if bare.contains('*') {
        return Err(ApiError::bad_request(
            402,
            format!("Invalid domain {d:?}: a wildcard may only be the whole first label (*.example.com)."),
        ));
    }
    let ok = bare.len() <= 253
        && bare.contains('.')
        && bare.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(ApiError::bad_request(
            326,
            format!("Invalid domain name {d:?}."),
        ));
    }
    if bare.ends_with(".internal") {
        return Err(ApiError::bad_request(
            326,
            ".internal names are not reserved: they need no reservation.",
        ));
    }
    Ok(d)
}

fn check_acl(acl: &[String]) -> Result<(), ApiError> {
    for rule in acl {
        let Some(target) = rule.strip_prefix("bind:") else {
            return Err(ApiError::bad_request(
                400,
                format!("Invalid ACL rule {rule:?}: rules look like bind:app.example.com or bind:*.example.com."),
            ));
        };
        if target.is_empty() {
            return Err(ApiError::bad_request(
                400,
                format!("Invalid ACL rule {rule:?}."),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(url: &str, policy: &str) -> EndpointRec {
        EndpointRec {
            id: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            url: url.into(),
            traffic_policy: policy.into(),
            description: String::new(),
            metadata: String::new(),
            bindings: vec![],
            pooling_enabled: false,
        }
    }

    const OK: &str = "on_http_request:\n  - actions:\n      - type: custom-response\n        config:\n          status_code: 200\n          body: hi\n";

    #[test]
    fn endpoint_checks() {
        assert_eq!(
            check_endpoint(&rec("https://A.example.com:443", OK)).expect("ok"),
            "https://a.example.com"
        );
        assert_eq!(
            check_endpoint(&rec("https://a.example.com:8443", OK)).map_err(|e| e.code),
            Err(9035)
        );
        assert_eq!(
            check_endpoint(&rec("https://a.internal:8443", OK))
                .map_err(|e| e.code)
                .map(|_| ()),
            Ok(())
        );
        assert_eq!(check_endpoint(&rec("", OK)).map_err(|e| e.code), Err(249));
        assert_eq!(
            check_endpoint(&rec("ftp://x.com", OK)).map_err(|e| e.code),
            Err(249)
        );
        assert_eq!(
            check_endpoint(&rec("https://x.com", "")).map_err(|e| e.code),
            Err(9026)
        );
        let no_term = "on_http_request:\n  - actions:\n      - type: add-headers\n        config:\n          headers:\n            a: b\n";
        let e = check_endpoint(&rec("https://x.com", no_term)).expect_err("must terminate");
        assert!(e.msg.contains("terminating action"), "{e}");
    }

    #[test]
    fn domain_rules() {
        assert_eq!(
            check_domain("App.Example.com").expect("ok"),
            "app.example.com"
        );
        assert_eq!(check_domain("*.example.com").expect("ok"), "*.example.com");
        assert_eq!(
            check_domain("app.*.example.com").map_err(|e| e.code),
            Err(402)
        );
        assert_eq!(check_domain("bad_name.com").map_err(|e| e.code), Err(326));
        assert!(domain_covers("*.example.com", "a.b.example.com"));
        assert!(!domain_covers("*.example.com", "example.com"));
        assert!(domain_covers("a.example.com", "a.example.com"));
    }
}
