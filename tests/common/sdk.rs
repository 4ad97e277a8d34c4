//! The official ngrok agent SDK (PyPI `ngrok` 1.7, ngrok-rust inside) as a
//! test peer: `tests/sdk/forward.py` forwarding a local port through an
//! edge. scripts/test.sh installs the package; outside CI a missing
//! package skips the tests that need it, with a printed reason.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

pub fn sdk_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import ngrok"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = "the ngrok Python SDK is not installed (pip install --ignore-requires-python 'ngrok==1.7.*'); scripts/test.sh installs it";
        assert!(
            std::env::var_os("CI").is_none(),
            "{msg}; CI is set, so this test must not be skipped"
        );
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

/// A running `tests/sdk/forward.py`.
pub struct Sdk {
    child: Child,
    dir: tempfile::TempDir,
    pub url: String,
}

impl Sdk {
    pub fn start(
        tunnel: std::net::SocketAddr,
        ca: &std::path::Path,
        domain: &str,
        port: u16,
    ) -> Sdk {
        Sdk::start_with(tunnel, ca, domain, port, &[])
    }

    /// With extra forward.py arguments (legacy endpoint options).
    pub fn start_with(
        tunnel: std::net::SocketAddr,
        ca: &std::path::Path,
        domain: &str,
        port: u16,
        extra: &[&str],
    ) -> Sdk {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/forward.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--server-addr", &format!("localhost:{}", tunnel.port())])
            .arg("--root-cas")
            .arg(ca)
            .args(["--domain", domain, "--port", &port.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(File::create(dir.path().join("out")).expect("out"))
            .stderr(File::create(dir.path().join("err")).expect("err"))
            .spawn()
            .expect("spawn python3");
        let mut sdk = Sdk {
            child,
            dir,
            url: String::new(),
        };
        let mut url = String::new();
        let ok = wait_until(Duration::from_secs(20), || {
            let out = std::fs::read_to_string(sdk.dir.path().join("out")).unwrap_or_default();
            match out.lines().find(|l| l.contains("://")) {
                Some(l) => {
                    url = l.trim().to_owned();
                    true
                }
                None => false,
            }
        });
        assert!(ok, "the SDK printed no URL; stderr:\n{}", sdk.stderr());
        sdk.url = url;
        sdk
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("err")).unwrap_or_default()
    }
}

impl Drop for Sdk {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
