//! The seed's login example end to end through the edge binary: an HTTPS
//! endpoint (`--dev` edge, local CA) whose policy runs `openid-connect`
//! against a real OpenID provider (tests/common/oidc.rs) and proxies to
//! an upstream only after login. The browser is curl with a cookie jar,
//! following redirects between the edge and the provider.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::oidc::{provider_available, start_provider, CLIENT_ID, CLIENT_SECRET};
use common::*;

const APP: &str = "app.ringress.localhost";

/// A browser: curl trusting the edge's and the provider's CAs, resolving
/// the app's name to the edge, with a cookie jar.
struct Curl {
    https: u16,
    bundle: PathBuf,
    jar: PathBuf,
    _dir: tempfile::TempDir,
}

/// What one curl run saw (the last response when following redirects).
#[derive(Debug)]
struct Seen {
    status: u16,
    url: String,
    headers: String,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.headers
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
            .collect()
    }
}

impl Curl {
    fn new(https: u16, cas: &[&Path]) -> Curl {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("cas.pem");
        let mut pem = String::new();
        for ca in cas {
            pem.push_str(&std::fs::read_to_string(ca).expect("read CA"));
            pem.push('\n');
        }
        std::fs::write(&bundle, pem).expect("write bundle");
        let jar = dir.path().join("jar.txt");
        std::fs::write(&jar, "").expect("jar");
        Curl {
            https,
            bundle,
            jar,
            _dir: dir,
        }
    }

    fn app(&self, path: &str) -> String {
        format!("https://{APP}:{}{path}", self.https)
    }

    /// Runs curl on `url` with `args`; `follow` follows redirects,
    /// `cookies` uses (and updates) the jar.
    fn run(&self, url: &str, follow: bool, cookies: bool, args: &[&str]) -> Seen {
        let dir = tempfile::tempdir().expect("tempdir");
        let headers = dir.path().join("headers");
        let body = dir.path().join("body");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30"])
            .arg("--cacert")
            .arg(&self.bundle)
            .args([
                "--resolve",
                &format!("{APP}:{}:127.0.0.1", self.https),
                "-w",
                "%{http_code} %{url_effective}",
            ])
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&body);
        if follow {
            cmd.arg("-L");
        }
        if cookies {
            cmd.arg("-b").arg(&self.jar).arg("-c").arg(&self.jar);
        }
        let out = cmd.args(args).arg(url).output().expect("run curl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {url} failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (status, url) = stdout.split_once(' ').expect("status and url");
        // With -L, -D holds every response's head: keep the last.
        let all = std::fs::read_to_string(&headers).unwrap_or_default();
        let last = all
            .split("\r\n\r\n")
            .filter(|h| !h.trim().is_empty())
            .last()
            .unwrap_or("")
            .to_string();
        Seen {
            status: status.parse().expect("status"),
            url: url.to_string(),
            headers: last,
            body: String::from_utf8_lossy(&std::fs::read(&body).unwrap_or_default()).into_owned(),
        }
    }

    /// Drops from the jar the cookies a response deleted (`Max-Age=0`).
    /// Browsers do; curl 7.88 keeps the first of several cookies deleted
    /// by one response.
    fn forget_deleted(&self, seen: &Seen) {
        let deleted: Vec<String> = seen
            .header("set-cookie")
            .iter()
            .filter(|c| c.to_ascii_lowercase().contains("max-age=0"))
            .filter_map(|c| c.split('=').next().map(str::to_string))
            .collect();
        let text = self.jar_text();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                let name = l.split('\t').nth(5).unwrap_or("");
                !deleted.iter().any(|d| d == name)
            })
            .collect();
        std::fs::write(&self.jar, kept.join("\n") + "\n").expect("write jar");
    }

    fn jar_text(&self) -> String {
        std::fs::read_to_string(&self.jar).unwrap_or_default()
    }
}

#[test]
fn openid_connect_login_through_the_edge_reaches_the_upstream() {
    if !provider_available() || require_tool("curl", &["curl"]).is_none() {
        return;
    }
    // The edge's HTTPS port first: the provider must know the redirect URI.
    let https = free_port();
    let idp = start_provider(&format!("https://{APP}:{https}/ngrok/oidc/callback"));
    let up = Upstream::start(Behaviour::Echo);
    let config = format!(
        r#"[[endpoints]]
url = "https://{APP}"
upstream = "{up}"
traffic_policy = {{ on_http_request = [ {{ actions = [ {{ type = "openid-connect", config = {{ issuer_url = "{issuer}", client_id = "{CLIENT_ID}", client_secret = "{CLIENT_SECRET}", ca_bundle = "{ca}", allow_domains = ["example.com"] }} }} ] }}, {{ actions = [ {{ type = "add-headers", config = {{ headers = {{ x-user-email = "${{actions.ngrok.oidc.identity.email}}", x-user-name = "${{actions.ngrok.oidc.identity.name}}" }} }} }} ] }} ] }}
"#,
        up = up.url(),
        issuer = idp.issuer,
        ca = idp.ca.display(),
    );
    let data = tempfile::tempdir().expect("tempdir");
    let edge = Edge::builder(&config)
        .arg("--dev")
        .arg("--data-dir")
        .arg(data.path().to_str().expect("utf-8"))
        .arg("--listen-https")
        .arg(&format!("127.0.0.1:{https}"))
        .start();
    let dev_ca = data.path().join("ca.pem");
    let browser = Curl::new(https, &[&dev_ca, &idp.ca]);

    // 1. No cookie: redirected to the provider; the upstream sees nothing.
    let first = browser.run(&browser.app("/private?q=1"), false, false, &["--http1.1"]);
    assert_eq!(first.status, 302, "{first:?}");
    let location = first.header("location");
    assert!(
        location[0].starts_with(&format!("{}/auth?", idp.issuer)),
        "{first:?}"
    );
    assert!(first
        .header("set-cookie")
        .iter()
        .any(|c| c.starts_with("ngrok_flow_oidc=") && c.contains("Secure")));
    // The same over HTTP/2 (the edge's reply converted to an h2 response).
    let h2 = browser.run(&browser.app("/private"), false, false, &["--http2"]);
    assert_eq!(h2.status, 302, "{h2:?}");
    assert!(h2.headers.starts_with("HTTP/2 302"), "{h2:?}");
    assert!(
        h2.header("set-cookie")
            .iter()
            .any(|c| c.starts_with("ngrok_flow_oidc=")),
        "{h2:?}"
    );
    assert_eq!(up.request_count(), 0);

    // 2. The browser follows: the provider's login form.
    let form = browser.run(&browser.app("/private?q=1"), true, true, &["--http1.1"]);
    assert_eq!(form.status, 200, "{form:?}");
    assert!(form.body.contains("Sign in"), "{form:?}");
    assert!(
        form.url
            .starts_with(&format!("{}/interaction/", idp.issuer)),
        "{form:?}"
    );
    assert!(browser.jar_text().contains("ngrok_flow_oidc"));
    assert_eq!(up.request_count(), 0);

    // 3. Log in: provider -> callback on the edge -> session cookie ->
    // back to the original URL, now proxied.
    let login_url = format!("{}/login", form.url.split('?').next().unwrap_or(""));
    let landed = browser.run(&login_url, true, true, &["--http1.1", "-d", "login=alice"]);
    assert_eq!(
        landed.status,
        200,
        "{landed:?}\nedge:\n{}",
        edge.stderr_text()
    );
    assert_eq!(landed.url, browser.app("/private?q=1"));
    let jar = browser.jar_text();
    assert!(jar.contains("ngrok_session_oidc"), "{jar}");
    assert!(
        jar.lines()
            .any(|l| l.starts_with("#HttpOnly_") && l.contains("ngrok_session_oidc")),
        "{jar}"
    );
    let seen = up.last_request();
    assert_eq!(seen.target, "/private?q=1");
    assert_eq!(seen.header("x-user-email"), Some("alice@example.com"));
    assert_eq!(seen.header("x-user-name"), Some("Test User alice"));
    let host = format!("{APP}:{https}");
    assert_eq!(seen.header("host"), Some(host.as_str()));
    assert_eq!(up.request_count(), 1, "only the logged-in request");

    // 4. The session cookie alone gets through, over HTTP/2 as well.
    for proto in ["--http1.1", "--http2"] {
        let again = browser.run(&browser.app("/again"), false, true, &[proto]);
        assert_eq!(again.status, 200, "{proto}: {again:?}");
        assert_eq!(up.last_request().target, "/again");
        assert_eq!(
            up.last_request().header("x-user-email"),
            Some("alice@example.com")
        );
    }

    // 5. A request without the cookie is still redirected, and a POST
    // without it refused (a redirect would lose its body).
    let stranger = browser.run(&browser.app("/again"), false, false, &["--http1.1"]);
    assert_eq!(stranger.status, 302, "{stranger:?}");
    let post = browser.run(
        &browser.app("/api"),
        false,
        false,
        &["--http1.1", "-d", "x=1", "-H", "accept: application/json"],
    );
    assert_eq!(post.status, 401, "{post:?}");
    assert_eq!(post.header("ngrok-error-code"), ["ERR_NGROK_3401"]);
    let count = up.request_count();

    // 6. Logout clears the session: the next request goes to the provider.
    let out = browser.run(&browser.app("/ngrok/logout"), false, true, &["--http1.1"]);
    assert_eq!(out.status, 200, "{out:?}");
    assert!(out.body.contains("logged out"), "{out:?}");
    let cleared = out.header("set-cookie");
    for name in ["ngrok_session_oidc", "ngrok_flow_oidc"] {
        assert!(
            cleared
                .iter()
                .any(|c| c.starts_with(&format!("{name}=;")) && c.contains("Max-Age=0")),
            "{out:?}"
        );
    }
    browser.forget_deleted(&out);
    let after = browser.run(&browser.app("/again"), false, true, &["--http1.1"]);
    assert_eq!(after.status, 302, "{after:?}");
    assert!(after.header("location")[0].starts_with(&idp.issuer));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(up.request_count(), count, "nothing forwarded after logout");
}
