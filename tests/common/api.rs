//! Helpers for the REST API tests: an edge with the API on a fresh port
//! and its bootstrap key, and a small curl-based API client.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::edge::Edge;

/// Marker the edge prints with the bootstrap key on its first `--dev` start.
pub const BOOTSTRAP_MARKER: &str = "bootstrap API key (shown once, keep it): ";

/// A `--dev` edge with HTTPS, the tunnel and the API on fresh ports, its
/// store in `data`; `config` is the edge's TOML.
pub fn api_edge(config: &str, data: &Path) -> Edge {
    Edge::builder(config)
        .arg("--dev")
        .arg("--data-dir")
        .arg(data.to_str().expect("utf-8 path"))
        .arg("--listen-https")
        .arg("127.0.0.1:0")
        .arg("--listen-api")
        .arg("127.0.0.1:0")
        .start()
}

/// The bootstrap API key from the edge's stderr.
pub fn bootstrap_key(edge: &Edge) -> String {
    let text = edge.stderr_text();
    let line = text
        .lines()
        .find(|l| l.contains(BOOTSTRAP_MARKER))
        .unwrap_or_else(|| panic!("no bootstrap key; stderr:\n{text}"));
    let start = line.find(BOOTSTRAP_MARKER).expect("marker") + BOOTSTRAP_MARKER.len();
    line[start..].trim().to_owned()
}

/// `http://<api addr>`.
pub fn api_base(edge: &Edge) -> String {
    format!("http://{}", edge.listener_addr("api"))
}

/// A data dir that outlives one edge (restarts); removed on drop.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ringress-api-data-")
        .tempdir()
        .expect("tempdir")
}

/// One API call with curl: (status, body). `headers` are extra lines.
pub fn call(
    base: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "20", "-X", method, "-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    // Bodies go through a file: some are larger than an argument may be.
    let file = tempfile::NamedTempFile::new().expect("body file");
    if let Some(b) = body {
        std::fs::write(file.path(), b).expect("write body");
        cmd.args(["-H", "content-type: application/json", "--data-binary"])
            .arg(format!("@{}", file.path().display()));
    }
    cmd.arg(format!("{base}{path}"));
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// An authenticated call with `Ngrok-Version: 2`.
pub fn authed(
    base: &str,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let auth = format!("Authorization: Bearer {key}");
    call(base, method, path, &[&auth, "Ngrok-Version: 2"], body)
}

/// The python of the venv that holds the PyPI `ngrok-api` client (it
/// clashes with the SDK's `ngrok` module): `$RINGRESS_NGROK_API_VENV` or
/// `~/.cache/ringress-ngrok-api-venv` (scripts/test.sh creates it).
pub fn api_client_python() -> Option<PathBuf> {
    let venv = std::env::var_os("RINGRESS_NGROK_API_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/ringress-ngrok-api-venv"))
        })?;
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import ngrok; ngrok.Client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg =
            "the PyPI ngrok-api client is not installed in its venv; scripts/test.sh creates it";
        assert!(
            std::env::var_os("CI").is_none(),
            "{msg}; CI is set, so this test must not be skipped"
        );
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    Some(py)
}
