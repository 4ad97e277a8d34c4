//! The certificate set a snapshot carries: by exact name, by wildcard
//! suffix, and an optional default. Chosen from the ClientHello's SNI:
//! exact name first, then the most specific wildcard covering it (a
//! wildcard certificate covers one label, as X.509 name matching says).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CertError {
    #[error("no certificate in the PEM data")]
    NoCertificate,
    #[error("invalid certificate PEM: {0}")]
    CertPem(String),
    #[error("invalid private key PEM: {0}")]
    KeyPem(String),
    #[error("unsupported private key: {0}")]
    Key(String),
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(String),
}

/// Parses a PEM chain (leaf first) and its private key.
pub fn certified_key_from_pem(chain: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, CertError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::CertPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| CertError::KeyPem(e.to_string()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let ck = CertifiedKey::from_der(certs, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(k) => CertError::Mismatch(format!("{k:?}")),
        other => CertError::Key(other.to_string()),
    })?;
    Ok(Arc::new(ck))
}

#[derive(Debug, Default, Clone)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Adds a certificate for a name (`example.com` or `*.example.com`).
    /// A later insert for the same name replaces the earlier one.
    pub fn insert(&mut self, name: &str, key: Arc<CertifiedKey>) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(suffix.to_owned(), key),
            None => self.exact.insert(name, key),
        };
    }

    pub fn set_default(&mut self, key: Arc<CertifiedKey>) {
        self.default = Some(key);
    }

    /// Whether some certificate covers `host` (without the default).
    pub fn covers(&self, host: &str) -> bool {
        self.lookup(host).is_some()
    }

    fn lookup(&self, host: &str) -> Option<&Arc<CertifiedKey>> {
        if let Some(k) = self.exact.get(host) {
            return Some(k);
        }
        let (_, parent) = host.split_once('.')?;
        self.wildcard.get(parent)
    }

    /// The certificate for a ClientHello: by SNI (already lowercase, as
    /// rustls gives it), else the default.
    pub fn resolve(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        sni.and_then(|name| self.lookup(name))
            .or(self.default.as_ref())
            .cloned()
    }

    /// The certificate for a name, without falling back to the default.
    pub fn for_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.lookup(name).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let k = rcgen::KeyPair::generate().expect("key");
        let c = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&k)
            .expect("cert");
        certified_key_from_pem(c.pem().as_bytes(), k.serialize_pem().as_bytes()).expect("ck")
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let mut s = CertStore::default();
        let app = key("app.example.com");
        let wild = key("*.example.com");
        s.insert("App.example.com", app.clone());
        s.insert("*.example.com", wild.clone());
        assert!(Arc::ptr_eq(
            &s.resolve(Some("app.example.com")).expect("exact"),
            &app
        ));
        assert!(Arc::ptr_eq(
            &s.resolve(Some("x.example.com")).expect("wild"),
            &wild
        ));
        // A wildcard certificate covers one label only.
        assert!(s.resolve(Some("a.b.example.com")).is_none());
        assert!(s.resolve(Some("example.com")).is_none());
        assert!(s.resolve(None).is_none());
        let d = key("default.invalid");
        s.set_default(d.clone());
        assert!(Arc::ptr_eq(&s.resolve(None).expect("default"), &d));
    }

    #[test]
    fn pem_errors_are_typed() {
        assert!(matches!(
            certified_key_from_pem(b"", b""),
            Err(CertError::NoCertificate)
        ));
        let k1 = rcgen::KeyPair::generate().expect("key");
        let k2 = rcgen::KeyPair::generate().expect("key");
        let c = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
            .expect("params")
            .self_signed(&k1)
            .expect("cert");
        let e = certified_key_from_pem(c.pem().as_bytes(), k2.serialize_pem().as_bytes());
        assert!(e.is_err(), "mismatched key must be refused");
    }
}
