//! The ACME state directory (`<data-dir>/acme`): the account credentials
//! and one certificate + key per domain. Layout:
//!
//! ```text
//! <state_dir>/account.json         {"directory_url": .., "credentials": ..}  0600
//! <state_dir>/certs/<domain>.key   PKCS#8 PEM                                 0600
//! <state_dir>/certs/<domain>.crt   chain PEM, leaf first                      0644
//! ```
//!
//! Writes are atomic (temp file, fsync, rename), the key before the
//! certificate, so a crash leaves either the old pair or a pair whose
//! mismatch is detected on load (and the domain is then issued again).
//! Domain names are validated before they become file names.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;
use serde::{Deserialize, Serialize};

use super::{AcmeError, IssuedCert};

const ACCOUNT_FILE: &str = "account.json";
const CERTS_DIR: &str = "certs";

/// Account credentials as stored, tied to the directory they belong to.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredAccount {
    pub(crate) directory_url: String,
    pub(crate) credentials: AccountCredentials,
}

pub(crate) struct Storage {
    root: PathBuf,
    certs: PathBuf,
}

impl Storage {
    /// Opens the state directory, creating it (0700) if missing.
    pub(crate) fn open(root: &Path) -> Result<Storage, AcmeError> {
        let certs = root.join(CERTS_DIR);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&certs)
            .map_err(|e| AcmeError::io(&certs, e))?;
        Ok(Storage {
            root: root.to_path_buf(),
            certs,
        })
    }

    pub(crate) fn account_path(&self) -> PathBuf {
        self.root.join(ACCOUNT_FILE)
    }

    pub(crate) fn load_account(&self) -> Result<Option<StoredAccount>, AcmeError> {
        let path = self.account_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AcmeError::io(&path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| AcmeError::AccountFile { path, source })
    }

    pub(crate) fn store_account(
        &self,
        directory_url: &str,
        credentials: AccountCredentials,
    ) -> Result<(), AcmeError> {
        let path = self.account_path();
        let stored = StoredAccount {
            directory_url: directory_url.to_owned(),
            credentials,
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(|source| AcmeError::AccountFile {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &json, 0o600)
    }

    pub(crate) fn cert_path(&self, domain: &str) -> PathBuf {
        self.certs.join(format!("{domain}.crt"))
    }

    pub(crate) fn key_path(&self, domain: &str) -> PathBuf {
        self.certs.join(format!("{domain}.key"))
    }

    pub(crate) fn store_cert(&self, cert: &IssuedCert) -> Result<(), AcmeError> {
        let domain = normalize_domain(&cert.domain)?;
        write_atomic(&self.key_path(&domain), cert.key_pem.as_bytes(), 0o600)?;
        write_atomic(&self.cert_path(&domain), cert.chain_pem.as_bytes(), 0o644)
    }

    /// The stored pair for one domain; `Ok(None)` if either file is missing.
    pub(crate) fn load_cert(&self, domain: &str) -> Result<Option<IssuedCert>, AcmeError> {
        let domain = normalize_domain(domain)?;
        let Some(chain_pem) = read_optional(&self.cert_path(&domain))? else {
            return Ok(None);
        };
        let Some(key_pem) = read_optional(&self.key_path(&domain))? else {
            return Ok(None);
        };
        IssuedCert::from_pem(domain, chain_pem, key_pem).map(Some)
    }

    /// Every domain with a stored certificate file (validity not checked).
    pub(crate) fn stored_domains(&self) -> Result<Vec<String>, AcmeError> {
        let entries = fs::read_dir(&self.certs).map_err(|e| AcmeError::io(&self.certs, e))?;
        let mut domains = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| AcmeError::io(&self.certs, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(domain) = name.strip_suffix(".crt") else {
                continue;
            };
            if normalize_domain(domain).is_ok_and(|d| d == domain) {
                domains.push(domain.to_owned());
            }
        }
        domains.sort();
        Ok(domains)
    }
}

/// Lowercases and validates a DNS name for HTTP-01: letters, digits,
/// hyphens, dots; labels of 1..=63 bytes; at most 253 bytes; no wildcard.
/// The result is safe to use as a file name.
pub(crate) fn normalize_domain(name: &str) -> Result<String, AcmeError> {
    let invalid = |reason: &'static str| AcmeError::InvalidDomain {
        domain: name.to_owned(),
        reason,
    };
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if lower.starts_with("*.") {
        return Err(invalid("wildcards cannot be validated with HTTP-01"));
    }
    if lower.is_empty() || lower.len() > 253 {
        return Err(invalid("length must be 1..=253"));
    }
    for label in lower.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("labels must be 1..=63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid("only letters, digits, '-' and '.' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("labels cannot start or end with '-'"));
        }
    }
    Ok(lower)
}

fn read_optional(path: &Path) -> Result<Option<String>, AcmeError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AcmeError::io(path, e)),
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AcmeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename durable; best effort (some filesystems refuse).
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e: io::Error| {
        let _ = fs::remove_file(&tmp);
        AcmeError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn self_signed(domain: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let params = rcgen::CertificateParams::new(vec![domain.into()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn domain_rules() {
        assert_eq!(
            normalize_domain("App.Example.COM.").ok().as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            normalize_domain("localhost").ok().as_deref(),
            Some("localhost")
        );
        for bad in [
            "*.example.com",
            "",
            "a..b",
            "../etc/passwd",
            "a/b",
            "-a.b",
            "a-.b",
            "a b",
            "é.example",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_domain(&"a".repeat(64)).is_err());
    }

    #[test]
    fn cert_round_trip_and_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(&dir.path().join("acme")).expect("open");
        assert!(storage.load_cert("a.example").expect("load").is_none());

        let (chain, key) = self_signed("a.example");
        let cert = IssuedCert::from_pem("a.example".into(), chain, key).expect("parse");
        storage.store_cert(&cert).expect("store");
        let loaded = storage
            .load_cert("A.example")
            .expect("load")
            .expect("present");
        assert_eq!(loaded.domain, "a.example");
        assert_eq!(loaded.chain_pem, cert.chain_pem);
        assert_eq!(loaded.key_pem, cert.key_pem);
        assert_eq!(loaded.serial, cert.serial);
        assert_eq!(loaded.not_after, cert.not_after);
        assert_eq!(storage.stored_domains().expect("list"), ["a.example"]);

        let mode = fs::metadata(storage.key_path("a.example"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(dir.path().join("acme"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn mismatched_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path()).expect("open");
        let (chain, _) = self_signed("b.example");
        let (_, other_key) = self_signed("b.example");
        fs::write(storage.cert_path("b.example"), chain).expect("write");
        fs::write(storage.key_path("b.example"), other_key).expect("write");
        assert!(storage.load_cert("b.example").is_err());
    }

    #[test]
    fn account_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path()).expect("open");
        assert!(storage.load_account().expect("load").is_none());
        // The format instant-acme documents for stored credentials.
        let json = r#"{"id":"https://ca.example/acct/1","key_pkcs8":"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJVWC_QzOTCS5vtsJp2IG-UDc8cdDfeoKtxSZxaznM-mhRANCAAQenCPoGgPFTdPJ7VLLKt56RxPlYT1wNXnHc54PEyBg3LxKaH0-sJkX0mL8LyPEdsfL_Oz4TxHkWLJGrXVtNhfH","directory":"https://ca.example/dir"}"#;
        let creds: AccountCredentials = serde_json::from_str(json).expect("creds");
        storage
            .store_account("https://ca.example/dir", creds)
            .expect("store");
        let stored = storage.load_account().expect("load").expect("present");
        assert_eq!(stored.directory_url, "https://ca.example/dir");
        let again = serde_json::to_value(&stored.credentials).expect("json");
        assert_eq!(again["id"], "https://ca.example/acct/1");
        let mode = fs::metadata(storage.account_path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        fs::write(storage.account_path(), "{not json").expect("write");
        assert!(matches!(
            storage.load_account(),
            Err(AcmeError::AccountFile { .. })
        ));
    }
}
