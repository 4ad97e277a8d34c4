//! ACME (RFC 8555) certificate management with HTTP-01 validation.
//!
//! Owns: one ACME account per state directory, and for every managed domain
//! its certificate's life: issue before first use, renew at two thirds of the
//! lifetime, retry failures with capped exponential backoff and jitter,
//! persist account and certificates under `<data-dir>/acme`, and publish the
//! pending HTTP-01 key authorizations in [`Challenges`].
//!
//! Must never: block or lock on a worker. The manager runs on its own OS
//! thread with a tokio current-thread runtime (design §2: the control plane
//! may use tokio). Workers only read [`Challenges`] (an `arc-swap` snapshot)
//! and receive certificates through the `on_cert` callback, which the edge
//! turns into its own certificate snapshot.
//!
//! ```text
//! AcmeHandle::spawn ── thread "ringress-acme" ── Manager (manager.rs)
//!    manage / renew_now ─► command channel ─┤  load stored certs → on_cert
//!                                           ├─ per domain: order.rs (≤ 4 at once)
//!                                           │    publish token ─► Challenges ◄─ workers
//!                                           └─ storage.rs: account.json, certs/<d>.{crt,key}
//! ```
//!
//! Trust for the directory's HTTPS: with `ca_bundle` unset, the platform
//! roots; with it set, only the bundle (see `client.rs` for how, and why).

mod challenges;
mod client;
mod manager;
mod order;
mod schedule;
mod storage;
pub(crate) mod x509;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use tokio::sync::mpsc;

pub use challenges::{Challenges, CHALLENGE_PATH_PREFIX};

use manager::{Command, Manager};
use storage::Storage;

/// Default first retry delay after a failed issuance.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(30);

/// How long a stopping manager waits for its blocking tasks (DNS lookups).
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How the manager reaches its CA and where it keeps its state.
#[derive(Clone, Debug)]
pub struct AcmeSettings {
    /// The ACME directory, e.g. `https://localhost:14000/dir` (HTTPS only).
    pub directory_url: String,
    /// PEM roots trusted for the directory's HTTPS (a private CA, pebble's own
    /// certificate). `None`: the platform's roots.
    pub ca_bundle: Option<PathBuf>,
    /// Registered as `mailto:<email>` on the account.
    pub contact_email: Option<String>,
    /// `<data-dir>/acme`: account credentials and certificates; created
    /// (0700) if missing; key files are 0600.
    pub state_dir: PathBuf,
    /// First retry delay after a failure; doubles per consecutive failure up
    /// to one hour, with jitter (each delay lies in [d/2, d]). At least 100 ms.
    pub retry_base: Duration,
}

impl AcmeSettings {
    /// Settings with no CA bundle, no contact and the default retry base.
    pub fn new(directory_url: impl Into<String>, state_dir: impl Into<PathBuf>) -> AcmeSettings {
        AcmeSettings {
            directory_url: directory_url.into(),
            ca_bundle: None,
            contact_email: None,
            state_dir: state_dir.into(),
            retry_base: DEFAULT_RETRY_BASE,
        }
    }
}

/// A certificate ready to serve: the chain (leaf first) and its private key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The (lowercase) domain the certificate was issued for.
    pub domain: String,
    /// PEM chain, leaf first, as downloaded from the CA.
    pub chain_pem: String,
    /// PKCS#8 PEM private key (ECDSA P-256 for certificates issued here).
    pub key_pem: String,
    /// Start of the leaf's validity.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
    /// The leaf's serial number, lowercase hex.
    pub serial: String,
}

impl IssuedCert {
    /// Parses and checks a stored or downloaded pair: the chain must hold at
    /// least one certificate, and the key must match the leaf.
    pub fn from_pem(
        domain: String,
        chain_pem: String,
        key_pem: String,
    ) -> Result<IssuedCert, AcmeError> {
        let bad = |domain: &str, reason: String| AcmeError::Certificate {
            domain: domain.to_owned(),
            reason,
        };
        let chain = x509::parse_chain_pem(&chain_pem).map_err(|r| bad(&domain, r))?;
        // parse_chain_pem never returns an empty chain.
        let leaf = x509::leaf_info(&chain[0]).map_err(|r| bad(&domain, r))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad(&domain, format!("private key: {e}")))?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        rustls::sign::CertifiedKey::from_der(chain, key, &provider)
            .and_then(|ck| ck.keys_match())
            .map_err(|e| bad(&domain, format!("key does not match certificate: {e}")))?;
        Ok(IssuedCert {
            domain,
            chain_pem,
            key_pem,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            serial: leaf.serial,
        })
    }

    /// The pair as a rustls `CertifiedKey`, ready for an SNI resolver.
    pub fn certified_key(&self) -> Result<rustls::sign::CertifiedKey, AcmeError> {
        let bad = |reason: String| AcmeError::Certificate {
            domain: self.domain.clone(),
            reason,
        };
        let chain = x509::parse_chain_pem(&self.chain_pem).map_err(bad)?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| bad(format!("private key: {e}")))?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| bad(e.to_string()))
    }

    /// When the manager renews this certificate (two thirds of its lifetime).
    pub fn renewal_time(&self) -> SystemTime {
        schedule::renewal_time(self.not_before, self.not_after)
    }
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("domain", &self.domain)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Errors of the ACME manager. Per-domain errors are logged by the manager
/// and retried; [`AcmeHandle::spawn`] returns the start-up ones.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid ACME settings: {0}")]
    Settings(String),
    #[error("CA bundle {}: {reason}", path.display())]
    CaBundle { path: PathBuf, reason: String },
    #[error("ACME account file {}: {source}", path.display())]
    AccountFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid domain {domain:?}: {reason}")]
    InvalidDomain {
        domain: String,
        reason: &'static str,
    },
    /// A request to the CA failed; `source` carries the CA's problem detail.
    #[error("ACME {op}: {source}")]
    Acme {
        op: &'static str,
        #[source]
        source: instant_acme::Error,
    },
    /// The CA refused the order (for example a failed HTTP-01 validation).
    #[error("ACME order for {domain} failed: {detail}")]
    OrderFailed { domain: String, detail: String },
    #[error("ACME order for {domain} timed out while {stage}")]
    Timeout { domain: String, stage: &'static str },
    #[error("certificate request for {domain}: {source}")]
    Csr {
        domain: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("certificate for {domain}: {reason}")]
    Certificate { domain: String, reason: String },
    #[error("starting the ACME manager: {0}")]
    Runtime(#[source] std::io::Error),
}

impl AcmeError {
    fn io(path: &Path, source: std::io::Error) -> AcmeError {
        AcmeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Handle to the ACME manager thread. Dropping it stops the manager (like
/// [`AcmeHandle::shutdown`]).
pub struct AcmeHandle {
    tx: mpsc::UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl AcmeHandle {
    /// Starts the manager on its own OS thread with a tokio current-thread
    /// runtime; returns at once (after checking the settings and creating the
    /// state directory). `on_cert` is called from the manager thread for every
    /// certificate loaded from disk at start (unless expired) and for every one
    /// newly issued or renewed. It should only publish (a snapshot swap), not
    /// block; a panic in it is caught and logged.
    pub fn spawn(
        settings: AcmeSettings,
        challenges: Arc<Challenges>,
        on_cert: Box<dyn Fn(IssuedCert) + Send>,
    ) -> Result<AcmeHandle, AcmeError> {
        check_directory_url(&settings.directory_url)?;
        if let Some(bundle) = &settings.ca_bundle {
            client::check_ca_bundle(bundle)?;
        }
        let storage = Storage::open(&settings.state_dir)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("ringress-acme-io")
            .build()
            .map_err(AcmeError::Runtime)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let manager = Manager::new(settings, storage, challenges, on_cert);
        let thread = std::thread::Builder::new()
            .name("ringress-acme".into())
            .spawn(move || {
                runtime.block_on(manager.run(rx));
                // Do not wait long for a stuck blocking task (a DNS lookup).
                runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
            })
            .map_err(AcmeError::Runtime)?;
        Ok(AcmeHandle {
            tx,
            thread: Some(thread),
        })
    }

    /// Replaces the set of managed domains (exact names, case-insensitive).
    /// Wildcards and invalid names are refused with an error log, since
    /// HTTP-01 cannot validate them. New domains without a stored certificate
    /// are issued now; removed ones stop renewing (their files stay).
    pub fn manage(&self, domains: Vec<String>) {
        self.send(Command::Manage(domains));
    }

    /// Forces a renewal of one managed domain now.
    pub fn renew_now(&self, domain: &str) {
        self.send(Command::RenewNow(domain.to_owned()));
    }

    /// True while the manager thread runs (false after a shutdown or a crash).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the manager: in-flight orders are abandoned (their challenges
    /// withdrawn) and the thread is joined.
    pub fn shutdown(self) {
        drop(self);
    }

    fn send(&self, command: Command) {
        if self.tx.send(command).is_err() {
            tracing::error!("ACME manager is not running; command dropped");
        }
    }
}

impl Drop for AcmeHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            // Never join from inside the manager (an on_cert that drops us).
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!("ACME manager thread panicked");
            }
        }
    }
}

fn check_directory_url(url: &str) -> Result<(), AcmeError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| AcmeError::Settings(format!("directory URL {url:?}: {e}")))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(AcmeError::Settings(format!(
            "directory URL {url:?} must be an https:// URL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_url_must_be_https() {
        assert!(check_directory_url("https://localhost:14000/dir").is_ok());
        assert!(check_directory_url(LETS_ENCRYPT_DIRECTORY).is_ok());
        assert!(check_directory_url("http://localhost:14000/dir").is_err());
        assert!(check_directory_url("not a url").is_err());
    }

    #[test]
    fn spawn_refuses_bad_settings_and_shuts_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = AcmeSettings::new("ftp://x", dir.path().join("acme"));
        let noop = || -> Box<dyn Fn(IssuedCert) + Send> { Box::new(|_| {}) };
        assert!(matches!(
            AcmeHandle::spawn(settings.clone(), Challenges::new(), noop()),
            Err(AcmeError::Settings(_))
        ));
        settings.directory_url = "https://127.0.0.1:1/dir".into();
        settings.ca_bundle = Some(dir.path().join("missing.pem"));
        assert!(matches!(
            AcmeHandle::spawn(settings.clone(), Challenges::new(), noop()),
            Err(AcmeError::CaBundle { .. })
        ));
        settings.ca_bundle = None;
        let handle = AcmeHandle::spawn(settings, Challenges::new(), noop()).expect("spawn");
        assert!(dir.path().join("acme/certs").is_dir());
        handle.manage(vec!["*.wild.example".into(), "Bad Name".into()]);
        assert!(handle.is_running());
        handle.shutdown();
    }
}
