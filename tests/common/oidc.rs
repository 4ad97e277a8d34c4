//! A real OpenID provider for end-to-end login tests: panva's
//! `oidc-provider` (npm, tests/oidc/provider.mjs) over HTTPS on loopback,
//! with a CA and certificate made here. Used by tests/oidc_provider.rs
//! (the action driven directly) and tests/oidc_edge.rs (through the edge).
//!
//! Needs `node` and `npm ci` in tests/oidc (scripts/test.sh does both);
//! outside CI a missing node skips with a message.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::free_port;

/// The static client the provider knows.
pub const CLIENT_ID: &str = "ringress-e2e";
/// Its secret (characters that need form-encoding on purpose).
pub const CLIENT_SECRET: &str = "e2e-secret-with:colon&amp";

pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// node plus oidc-provider in tests/oidc/node_modules (installed here with
/// `npm ci` when npm is present). Outside CI, missing tools skip the test.
pub fn provider_available() -> bool {
    let installed = || {
        oidc_dir()
            .join("node_modules/oidc-provider/package.json")
            .exists()
    };
    if have("node") && !installed() && have("npm") {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(oidc_dir())
            .status();
        println!("npm ci in tests/oidc: {status:?}");
    }
    if have("node") && installed() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "node and oidc-provider are needed (scripts/test.sh installs nodejs/npm and runs npm ci in tests/oidc)"
    );
    println!("SKIPPED: node or oidc-provider not installed");
    false
}

/// The provider process, killed on drop.
pub struct IdP {
    child: Child,
    /// `https://127.0.0.1:<port>`.
    pub issuer: String,
    /// The CA (PEM) that signed the provider's certificate.
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for IdP {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the provider on a fresh port with `redirect_uri` as the
/// client's only redirect URI.
pub fn start_provider(redirect_uri: &str) -> IdP {
    let dir = tempfile::tempdir().expect("tempdir");
    // A CA and a server certificate for 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ringress e2e CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).expect("write");
    std::fs::write(&cert_path, leaf.pem()).expect("write");
    std::fs::write(&key_path, leaf_key.serialize_pem()).expect("write");

    let port = free_port();
    let mut child = Command::new("node")
        .arg(oidc_dir().join("provider.mjs"))
        .env("PORT", port.to_string())
        .env("CERT", &cert_path)
        .env("KEY", &key_path)
        .env("CLIENT_ID", CLIENT_ID)
        .env("CLIENT_SECRET", CLIENT_SECRET)
        .env("REDIRECT_URI", redirect_uri)
        .env("DEBUG", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("[provider] {line}");
            if let Some(issuer) = line.strip_prefix("READY ") {
                let _ = tx.send(issuer.to_string());
            }
        }
    });
    let issuer = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(i) => i,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the OpenID provider did not start within 30 s");
        }
    };
    IdP {
        child,
        issuer,
        ca: ca_path,
        _dir: dir,
    }
}
