//! The development CA: created once in the data dir (`ca.pem`, with its key
//! in `ca-key.pem`, mode 0600), then used to issue leaf certificates for the
//! dev base domain, `localhost` and loopback addresses, so that
//! `curl --cacert <data-dir>/ca.pem https://app.ringress.localhost:8443/`
//! works with nothing else set up. Never used outside `--dev`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

use super::store::{certified_key_from_pem, CertError};

#[derive(Debug, Error)]
pub enum LocalCaError {
    #[error("local CA: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("local CA: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("local CA: {0}")]
    Cert(#[from] CertError),
}

/// Leaf certificates live this long; the dev edge issues fresh ones at
/// every start and reload, so this only bounds a long-running process.
const LEAF_DAYS: i64 = 90;
const CA_YEARS: i64 = 10;
const CA_NAME: &str = "ringress development CA";

pub struct LocalCa {
    key: KeyPair,
    cert: Certificate,
    pem_path: PathBuf,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("pem_path", &self.pem_path)
            .finish()
    }
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "ringress");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl LocalCa {
    /// Loads the CA from `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<LocalCa, LocalCaError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LocalCaError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let pem_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        if key_path.exists() && pem_path.exists() {
            let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key = KeyPair::from_pem(&key_pem)?;
            // The issuer for signing is rebuilt from the same name and key:
            // leaves chain to the stored ca.pem by subject and key.
            let mut params = ca_params()?;
            params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
            params.not_after = OffsetDateTime::now_utc() + Duration::days(365 * CA_YEARS);
            let cert = params.self_signed(&key)?;
            return Ok(LocalCa {
                key,
                cert,
                pem_path,
            });
        }
        let key = KeyPair::generate()?;
        let mut params = ca_params()?;
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365 * CA_YEARS);
        let cert = params.self_signed(&key)?;
        write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
        fs::write(&pem_path, cert.pem()).map_err(io(&pem_path))?;
        Ok(LocalCa {
            key,
            cert,
            pem_path,
        })
    }

    /// Where the CA certificate is (for `curl --cacert`).
    pub fn pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// Issues a leaf certificate for `names` (DNS names, wildcards, IPs).
    pub fn issue(
        &self,
        names: &[String],
    ) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, LocalCaError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "localhost".into()),
        );
        params.distinguished_name = dn;
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(LEAF_DAYS);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let chain_pem = cert.pem();
        Ok(certified_key_from_pem(
            chain_pem.as_bytes(),
            key.serialize_pem().as_bytes(),
        )?)
    }
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = LocalCa::load_or_create(dir.path()).expect("create");
        let first = fs::read_to_string(ca.pem_path()).expect("pem");
        let again = LocalCa::load_or_create(dir.path()).expect("load");
        assert_eq!(first, fs::read_to_string(again.pem_path()).expect("pem"));
        let key = dir.path().join("ca-key.pem");
        let mode = fs::metadata(key).expect("key").permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            mode.mode() & 0o077,
            0,
            "key must not be group/world readable"
        );
        let leaf = again
            .issue(&["app.ringress.localhost".into(), "127.0.0.1".into()])
            .expect("issue");
        assert_eq!(leaf.cert.len(), 1);
    }
}
