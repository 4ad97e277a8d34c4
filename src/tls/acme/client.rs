//! The ACME account: loaded from the state directory or registered once, and
//! the HTTP trust used to reach the directory.
//!
//! Trust. With `ca_bundle` unset, instant-acme's built-in client (hyper-rustls
//! with the platform roots). With it set, a hyper client whose rustls
//! `ClientConfig` trusts only the bundle's certificates; instant-acme
//! implements its `HttpClient` trait for hyper-util's client.
//!
//! badNonce. instant-acme retries a `badNonce` answer twice inside each
//! request; [`acme_call!`] adds an outer retry so that a CA rejecting nonces
//! often (pebble's `PEBBLE_WFE_NONCEREJECT`) still cannot fail an order.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{Account, HttpClient, NewAccount};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tracing::{info, warn};

use super::storage::Storage;
use super::{AcmeError, AcmeSettings};

/// Outer retries of one ACME request after a `badNonce` problem (each of
/// which already made three attempts inside instant-acme).
pub(crate) const BAD_NONCE_RETRIES: u32 = 5;

const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";
const ACCOUNT_GONE: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

pub(crate) fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some(BAD_NONCE))
}

/// True when the CA no longer knows the stored account (for example a
/// test CA that was restarted): the account must be registered again.
pub(crate) fn is_account_gone(e: &AcmeError) -> bool {
    matches!(e, AcmeError::Acme { source: instant_acme::Error::Api(p), .. }
        if p.r#type.as_deref() == Some(ACCOUNT_GONE))
}

/// Runs an instant-acme call (an expression producing a future, evaluated
/// again for every attempt), retrying `badNonce`, and maps the error into
/// [`AcmeError::Acme`] with `$op` as context.
macro_rules! acme_call {
    ($op:expr, $call:expr) => {{
        let mut attempt = 0u32;
        loop {
            match $call.await {
                Err(e)
                    if $crate::tls::acme::client::is_bad_nonce(&e)
                        && attempt < $crate::tls::acme::client::BAD_NONCE_RETRIES =>
                {
                    attempt += 1;
                    tracing::debug!(op = $op, attempt, "ACME badNonce, retrying");
                }
                Err(source) => break Err($crate::tls::acme::AcmeError::Acme { op: $op, source }),
                Ok(v) => break Ok(v),
            }
        }
    }};
}
pub(crate) use acme_call;

/// Reads the CA bundle: readable PEM with at least one usable certificate.
pub(crate) fn bundle_roots(path: &Path) -> Result<rustls::RootCertStore, AcmeError> {
    let bad = |reason: String| AcmeError::CaBundle {
        path: path.to_path_buf(),
        reason,
    };
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in iter {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate found".into()));
    }
    Ok(roots)
}

/// Checks the CA bundle at start-up (see [`bundle_roots`]).
pub(crate) fn check_ca_bundle(path: &Path) -> Result<(), AcmeError> {
    bundle_roots(path).map(|_| ())
}

/// An HTTPS client for the directory that trusts only `bundle`.
fn bundle_client(bundle: &Path) -> Result<Box<dyn HttpClient>, AcmeError> {
    let roots = bundle_roots(bundle)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError::CaBundle {
            path: bundle.to_path_buf(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    Ok(Box::new(client))
}

/// Restores the stored account, or registers a new one and stores it.
/// `fresh` forces a new registration (the CA forgot the stored one).
pub(crate) async fn connect(
    settings: &AcmeSettings,
    storage: &Storage,
    fresh: bool,
) -> Result<Account, AcmeError> {
    let bundle = settings.ca_bundle.as_deref();
    if !fresh {
        match storage.load_account()? {
            Some(stored) if stored.directory_url == settings.directory_url => {
                let restored = match bundle {
                    Some(b) => {
                        Account::from_credentials_and_http(stored.credentials, bundle_client(b)?)
                            .await
                    }
                    None => Account::from_credentials(stored.credentials).await,
                };
                let account = restored.map_err(|source| AcmeError::Acme {
                    op: "restore account",
                    source,
                })?;
                info!(
                    directory = %settings.directory_url,
                    path = %storage.account_path().display(),
                    "ACME account loaded"
                );
                return Ok(account);
            }
            Some(stored) => warn!(
                stored = %stored.directory_url,
                directory = %settings.directory_url,
                "stored ACME account belongs to another directory; registering a new one"
            ),
            None => {}
        }
    }

    let contact = settings
        .contact_email
        .as_ref()
        .map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new_account = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = acme_call!("register account", async {
        match bundle {
            Some(b) => {
                let http = bundle_client(b).map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
                Account::create_with_http(&new_account, &settings.directory_url, None, http).await
            }
            None => Account::create(&new_account, &settings.directory_url, None).await,
        }
    })?;
    storage.store_account(&settings.directory_url, credentials)?;
    info!(
        directory = %settings.directory_url,
        path = %storage.account_path().display(),
        "ACME account registered"
    );
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundle_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").expect("write");
        assert!(check_ca_bundle(&empty).is_err());
        assert!(check_ca_bundle(&dir.path().join("missing.pem")).is_err());

        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["ca.example".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let good = dir.path().join("good.pem");
        std::fs::write(&good, cert.pem()).expect("write");
        check_ca_bundle(&good).expect("valid bundle");
    }

    #[test]
    fn recognises_bad_nonce() {
        let problem: instant_acme::Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:badNonce","detail":"JWS has an invalid anti-replay nonce"}"#,
        )
        .expect("problem");
        assert!(is_bad_nonce(&instant_acme::Error::Api(problem)));
        assert!(!is_bad_nonce(&instant_acme::Error::Str("x")));
    }
}
